"""The one exception type for a failure the user caused and can fix (a port in use, a mesh that
does not answer): the command prints its message as one line and exits non-zero."""


class UserError(Exception):
    """Its message is what went wrong and what to do, in one line."""


def connection_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words ("connection refused"), from the exception chain
    of any HTTP client (httpx, httpx2, anyio's multi-address attempts)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, TimeoutError):
            return "timed out"
        if isinstance(current, OSError) and current.errno == -2:  # socket.EAI_NONAME
            return f"unknown host ({current.strerror})"
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
    return str(exc) or type(exc).__name__
