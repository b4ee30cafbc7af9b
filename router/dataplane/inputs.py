"""A request's inputs -> the tensors the model's config declares, with every
image decoded off the event loop, in a bounded pool of threads."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import numpy as np

from router.dataplane import preprocess
from router.dataplane.catalog import ModelInfo
from router.dataplane.types import Item
from router.errors import InvalidInput, RouterError
from router.settings import Settings

T = TypeVar("T")


class Inputs:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Images are decoded in these threads, never on the event loop. At most
        # PREPROCESS_WORKERS pieces of work are handed to the pool at once; the
        # rest wait on the semaphore holding only their encoded bytes, so the
        # pool's own queue stays empty and a cancelled request leaves nothing in it.
        self._pool = ThreadPoolExecutor(max_workers=settings.preprocess_workers, thread_name_prefix="preprocess")
        self._slots = asyncio.Semaphore(settings.preprocess_workers)

    def close(self) -> None:
        """Stop the decoding threads; work already running finishes on its own."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def tensor(self, info: ModelInfo, item: Item) -> np.ndarray:
        """One item's tensor. An image is decoded here: off the event loop
        only (decode_images runs it in the pool)."""
        s = self.settings
        if item.image is not None:
            return preprocess.image_tensor(item.image, info, s.max_image_pixels, s.max_image_aspect)
        if item.text is not None:
            return preprocess.text_tensor(item.text, info, self.settings.max_text_chars)
        what = "text (or input)" if info.input_kind == "text_utf8" else "an image (file or image_b64)"
        raise InvalidInput(f"model {info.name!r} needs {what}")

    async def screen(self, info: ModelInfo, items: list[Item]) -> list[np.ndarray | None]:
        """Each item in order, no pixel decoded: a text's tensor (cheap: built
        here), None for an image whose header passes. Headers are read in the
        pool, all of a request's in one piece of work."""
        s = self.settings
        images = [item.image for item in items if item.image is not None]
        errors = iter(await self._offload(_header_errors, images, info, s.max_image_pixels, s.max_image_aspect)
                      if images else ())
        out: list[np.ndarray | None] = []
        for item in items:
            if item.image is not None:
                if (error := next(errors)) is not None:
                    raise error
                out.append(None)
            else:
                out.append(self.tensor(info, item))
        return out

    async def decode_images(self, info: ModelInfo, items: list[Item]) -> list[np.ndarray]:
        """The images' tensors, decoded in the pool in order by at most
        PREPROCESS_WORKERS runners, so that concurrent requests take turns
        rather than one batch queueing all of its images ahead of them.
        Nothing new starts after a failure; the first failed item in order is
        raised."""
        out: list[np.ndarray | None] = [None] * len(items)
        errors: dict[int, Exception] = {}
        order = iter(range(len(items)))

        async def runner() -> None:
            for i in order:
                if errors:
                    return
                try:
                    out[i] = await self._offload(self.tensor, info, items[i])
                except Exception as exc:  # raised below, the first in order
                    errors[i] = exc

        await asyncio.gather(*(runner() for _ in range(min(len(items), self.settings.preprocess_workers))))
        if errors:
            raise errors[min(errors)]
        return out  # type: ignore[return-value]

    async def _offload(self, fn: Callable[..., T], *args) -> T:
        """fn(*args) in the pool once a slot is free. The slot is given back
        when the thread is done with it, not when the caller stops waiting,
        so cancelled requests cannot pile work up in the pool."""
        loop = asyncio.get_running_loop()
        await self._slots.acquire()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise

        def release(_) -> None:
            try:
                loop.call_soon_threadsafe(self._slots.release)
            except RuntimeError:  # the loop is closed: nothing waits on the slots any more
                pass

        future.add_done_callback(release)
        return await asyncio.wrap_future(future)


def _header_errors(images: list[bytes], info: ModelInfo, max_pixels: int,
                   max_aspect: float) -> list[RouterError | None]:
    """For each image, why its header is refused, or None."""
    out: list[RouterError | None] = []
    for raw in images:
        try:
            preprocess.check_image(raw, info, max_pixels, max_aspect)
            out.append(None)
        except RouterError as exc:
            out.append(exc)
    return out
