# Type stub of the coreio extension module (src/python/coreiomodule.c); docs/python.md.
from types import TracebackType
from typing import Any, Callable, Iterable, Optional, Protocol, Tuple, Type, TypeVar, Union

from _typeshed import ReadableBuffer, WriteableBuffer

__version__: str

FLAGS_IFETCH: int
FLAGS_PRIV: int
FLAGS_SECURE: int
CAP_LARGE_DMA: int
CAP_CLAIM_ACK: int
CAP_SHM: int

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

_Fd = Union[int, _HasFileno]
# Callbacks return 0 or None for success; any other int is a bus error.
_Result = Optional[int]
_ReadCallback = Callable[[Any, int, bytearray, int], _Result]
_WriteCallback = Callable[[Any, int, bytearray, int], _Result]
_ReadPairCallback = Callable[[Any, int, bytearray, bytearray, int], _Result]
_WritePairCallback = Callable[[Any, int, bytearray, bytearray, int], _Result]
_CompletionCallback = Callable[[Any, int], object]

_Self = TypeVar("_Self", bound="Context")

class Context:
    """One connection to one VM, with its own registrations (subclassable)."""

    def connect(self, target: Optional[str] = None) -> int: ...
    def disconnect(self) -> None: ...
    def register(
        self,
        rid: int,
        read: _ReadCallback,
        write: _WriteCallback,
        readp: Optional[_ReadPairCallback] = None,
        writep: Optional[_WritePairCallback] = None,
        funcp: Any = None,
    ) -> int: ...
    def mainloop(self, usec: int) -> int: ...
    def irq_update(self, rid: int, iid: int, state: int) -> int: ...
    def dma_read(
        self,
        mid: int,
        sid: int,
        addr: int,
        buf: WriteableBuffer,
        flags: int = 0,
        cpl: Optional[_CompletionCallback] = None,
        cplp: Any = None,
    ) -> int: ...
    def dma_write(
        self,
        mid: int,
        sid: int,
        addr: int,
        buf: ReadableBuffer,
        flags: int = 0,
        cpl: Optional[_CompletionCallback] = None,
        cplp: Any = None,
    ) -> int: ...
    def preparefds(
        self, readfds: Optional[Iterable[_Fd]] = None, writefds: Optional[Iterable[_Fd]] = None
    ) -> Tuple[int, list[int], list[int]]: ...
    def processfds(
        self, readable: Optional[Iterable[_Fd]] = None, writable: Optional[Iterable[_Fd]] = None
    ) -> int: ...
    def fileno(self) -> int: ...
    def process(self) -> int: ...
    def caps(self) -> int: ...
    def set_reset_callback(self, callback: Optional[Callable[[], object]], /) -> None: ...
    def close(self) -> None: ...
    @property
    def connected(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self: _Self) -> _Self: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...

def default_context() -> Context: ...

# The original module's interface, on the default context.
def connect(target: Optional[str] = None) -> int: ...
def disconnect() -> None: ...
def register(
    rid: int,
    read: _ReadCallback,
    write: _WriteCallback,
    readp: Optional[_ReadPairCallback] = None,
    writep: Optional[_WritePairCallback] = None,
    funcp: Any = None,
) -> int: ...
def mainloop(usec: int) -> int: ...
def irq_update(rid: int, iid: int, state: int) -> int: ...
def dma_read(
    mid: int,
    sid: int,
    addr: int,
    buf: WriteableBuffer,
    flags: int = 0,
    cpl: Optional[_CompletionCallback] = None,
    cplp: Any = None,
) -> int: ...
def dma_write(
    mid: int,
    sid: int,
    addr: int,
    buf: ReadableBuffer,
    flags: int = 0,
    cpl: Optional[_CompletionCallback] = None,
    cplp: Any = None,
) -> int: ...
def preparefds(
    readfds: Optional[Iterable[_Fd]] = None, writefds: Optional[Iterable[_Fd]] = None
) -> Tuple[int, list[int], list[int]]: ...
def processfds(
    readable: Optional[Iterable[_Fd]] = None, writable: Optional[Iterable[_Fd]] = None
) -> int: ...
