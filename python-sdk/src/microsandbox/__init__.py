"""microsandbox: pure asyncio client of msb-imaged, the local OCI image cache.

    from microsandbox import Image

    images = await Image.list()
    for image in images:
        print(image.reference, image.layer_count)
"""

from ._client import MAX_RESPONSE_BYTES, aclose, default_socket_path
from ._image import Image, PullOperation, PullPolicy
from ._progress import (
    PullComplete,
    PullEvent,
    PullFsmeta,
    PullLayerCached,
    PullLayerConverted,
    PullLayerDownload,
    PullLayerDownloaded,
    PullResolved,
    PullResolving,
    PullUnknownEvent,
    PullVmdk,
)
from ._types import (
    BindRootfs,
    DiskRootfs,
    ImageConfigDetail,
    ImageDetail,
    ImageHandle,
    ImageLayerDetail,
    ImagePruneReport,
    OciRootfs,
    Pin,
    PinKind,
    Rootfs,
    RootfsLayer,
    RootfsSource,
)
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all

__version__ = "0.1.0"

__all__ = [
    "Image",
    "ImageHandle",
    "ImageDetail",
    "ImageConfigDetail",
    "ImageLayerDetail",
    "ImagePruneReport",
    "Pin",
    "PinKind",
    "Rootfs",
    "RootfsLayer",
    "RootfsSource",
    "OciRootfs",
    "BindRootfs",
    "DiskRootfs",
    "PullOperation",
    "PullPolicy",
    "PullEvent",
    "PullResolving",
    "PullResolved",
    "PullLayerCached",
    "PullLayerDownload",
    "PullLayerDownloaded",
    "PullLayerConverted",
    "PullFsmeta",
    "PullVmdk",
    "PullComplete",
    "PullUnknownEvent",
    "default_socket_path",
    "aclose",
    "MAX_RESPONSE_BYTES",
    *(name for name in _errors_all if not name.startswith("ERRORS_")),
]
