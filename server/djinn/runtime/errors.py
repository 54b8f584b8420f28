"""Errors with a gRPC status name, raised anywhere in the runtime, mapped by the service."""


class DjinnError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code  # a grpc.StatusCode name: NOT_FOUND, INVALID_ARGUMENT, ...


def not_found(msg): return DjinnError("NOT_FOUND", msg)
def invalid(msg): return DjinnError("INVALID_ARGUMENT", msg)
def precondition(msg): return DjinnError("FAILED_PRECONDITION", msg)
def exhausted(msg): return DjinnError("RESOURCE_EXHAUSTED", msg)
def out_of_range(msg): return DjinnError("OUT_OF_RANGE", msg)
def unavailable(msg): return DjinnError("UNAVAILABLE", msg)
