"""The served model versions, kept in step with the model repository on disk.

Every `poll_seconds` the repository is listed; a new version is loaded and checked
completely in a worker thread (serving.runtime.load_model_version) and only then becomes
the default ("newest") in one step. Versions beyond the newest `keep_versions` that loaded
leave the lookup at once but keep their session until every request already queued on them
is answered, so a reload never fails a request in flight.

Each model and each version fails alone: a version that cannot be served is refused with one
log line and a metric, never counts toward `keep_versions`, and is tried again once its
files change (a folder copied in slowly loads when the copy is complete).
"""

import asyncio
import logging
import time
from concurrent.futures import Executor
from pathlib import Path

from common.cli import UserError
from common.model_runtime import ProviderChoice
from common.repository import folder_state, list_models, list_versions, version_dir
from serving import errors
from serving.batcher import Batcher
from serving.config import ServerConfig
from serving.logs import shown
from serving.metrics import ServerMetrics
from serving.runtime import ModelLoadError, load_model_version

log = logging.getLogger("serving.registry")


class ModelRegistry:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics, executor: Executor):
        self.config = config
        self.metrics = metrics
        self.executor = executor
        self.repository = Path(config.model_repository)
        self.choice = ProviderChoice(config.provider)
        self._served: dict[str, dict[int, Batcher]] = {}
        self._newest: dict[str, Batcher] = {}  # the default version of each model
        self._failed: dict[tuple[str, int], tuple] = {}  # (model, version): its files then
        self._unloading: set[asyncio.Task] = set()

    @property
    def provider(self) -> str | None:
        return self.choice.provider

    def model_names(self) -> list[str]:
        return sorted(self._served)

    def serves(self, name: str) -> bool:
        return name in self._served

    def versions(self, name: str) -> dict[int, Batcher]:
        """Loaded versions of one model, ascending; NOT_FOUND if the model is not served."""
        if name not in self._served:
            served = ", ".join(self.model_names()) or "none"
            raise errors.not_found(f"model '{shown(name)}' is not served (served: {served})")
        return dict(sorted(self._served[name].items()))

    def get(self, name: str, version: int = 0) -> Batcher:
        """The batcher of a version (0: the newest); NOT_FOUND if it is not loaded. On every
        request's path: no copy, no sort (the newest is kept when versions change)."""
        if version == 0 and (newest := self._newest.get(name)) is not None:
            return newest
        versions = self.versions(name)
        if version not in versions:
            raise errors.not_found(
                f"model '{shown(name)}' has no version {version} loaded "
                f"(loaded: {sorted(versions)})"
            )
        return versions[version]

    def _versions_changed(self, name: str) -> None:
        served = self._served.get(name)
        if served:
            self._newest[name] = served[max(served)]
        else:
            self._newest.pop(name, None)

    def _wanted_models(self) -> list[str]:
        return list(self.config.models) or list_models(self.repository)

    def check_repository(self) -> None:
        """UserError unless the repository holds every wanted model (cheap: no loading)."""
        if not self.repository.is_dir():
            raise UserError(f"model repository not found: {self.repository}")
        try:
            available = list_models(self.repository)
        except OSError as error:
            raise UserError(f"{self.repository}: cannot read ({error.strerror})") from None
        if not available:
            raise UserError(
                f"no model versions in {self.repository} (<model>/<version>/model.onnx)"
            )
        missing = sorted(set(self.config.models) - set(available))
        if missing:
            raise UserError(f"models not in {self.repository}: {', '.join(missing)}")

    async def load_initial(self) -> None:
        """Load the newest versions of every wanted model; UserError if a model named with
        --models, or every model, has no version that can be served."""
        self.check_repository()
        await self.refresh()
        unloaded = [name for name in self._wanted_models() if name not in self._served]
        if unloaded and (self.config.models or not self._served):
            raise UserError(f"no loadable version of {', '.join(unloaded)} in {self.repository}")
        if unloaded:  # served once a version loads: polling goes on for them
            log.error("models without a loadable version", extra={"models": unloaded})

    async def refresh(self) -> None:
        """Load new versions and retire those beyond the newest `keep_versions` that loaded."""
        try:
            names = self._wanted_models()
        except OSError as error:
            log.error("model repository unreadable", extra={"reason": str(error)})
            return
        for name in names:
            try:
                await self._refresh_model(name)
            except UserError:  # the server's settings, not the model (--provider cuda, say)
                raise
            except Exception as error:  # one model's trouble never stops the others
                log.error(
                    "model refresh failed",
                    extra={"model": shown(name), "reason": f"{type(error).__name__}: {error}"},
                )

    async def _refresh_model(self, name: str) -> None:
        kept: list[int] = []
        for version in reversed(list_versions(self.repository / name)):
            if len(kept) == self.config.keep_versions:
                break
            if version in self._served.get(name, {}) or await self._load(name, version):
                kept.append(version)
        served = self._served.get(name, {})
        if kept:  # never retire the last version while nothing newer loaded
            for version in [v for v in served if v not in kept]:
                self._retire(name, version)
        if served:
            self.metrics.default_version.labels(name).set(max(served))

    async def _load(self, name: str, version: int) -> bool:
        """Load and check one version; False (logged, counted) if it cannot be served."""
        folder = version_dir(self.repository, name, version)
        state = folder_state(folder)
        if self._failed.get((name, version)) == state:
            return False  # refused before, and its files have not changed since
        start = time.perf_counter()
        try:
            model = await asyncio.to_thread(
                load_model_version,
                folder,
                name,
                version,
                self.choice,
                self.config.intra_op_threads,
            )
        except UserError:
            raise
        except Exception as error:  # ModelLoadError, or anything a broken file raises
            self._failed[(name, version)] = state
            self.metrics.versions_refused.labels(name).inc()
            reason = str(error) if isinstance(error, ModelLoadError) else repr(error)
            log.error(
                "model version refused; tried again when its files change",
                extra={"model": name, "version": version, "reason": shown(reason, 500)},
            )
            return False
        self._failed.pop((name, version), None)
        batcher = Batcher(
            model,
            max_batch_size=self.config.max_batch_size,
            delay_s=self.config.batch_delay_s,
            capacity=self.config.queue_capacity,
            batching=self.config.batching,
            executor=self.executor,
            metrics=self.metrics,
        )
        batcher.start()
        self._served.setdefault(name, {})[version] = batcher
        self._versions_changed(name)
        log.info(
            "model loaded",
            extra={
                "model": name,
                "version": version,
                "provider": model.provider,
                "default_version": max(self._served[name]),
                "seconds": round(time.perf_counter() - start, 3),
                "image_ms": round(model.image_seconds * 1000, 3),
            },
        )
        return True

    def _retire(self, name: str, version: int) -> None:
        """Out of the lookup now; unloaded once its queued requests are answered."""
        batcher = self._served[name].pop(version)
        self._versions_changed(name)
        task = asyncio.create_task(self._unload(batcher))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    async def _unload(self, batcher: Batcher) -> None:
        await batcher.close()
        log.info(
            "model unloaded", extra={"model": batcher.model.name, "version": batcher.model.version}
        )

    async def watch(self) -> None:
        """Poll the repository forever (cancel to stop); a failed poll is logged and retried."""
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                await self.refresh()
            except Exception:
                log.exception("repository poll failed")

    async def close(self) -> None:
        """Answer everything queued on every version, then drop the sessions."""
        batchers = [b for versions in self._served.values() for b in versions.values()]
        self._served.clear()
        self._newest.clear()
        await asyncio.gather(*(b.close() for b in batchers), *self._unloading)
