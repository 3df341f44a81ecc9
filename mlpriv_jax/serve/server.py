"""Running the app under uvicorn: on a socket bound here (a port in use is a one-line error), in the foreground
(the program) or on a background thread (tests, benchmarks, notebooks)."""

import socket
import threading
import time
from typing import Optional

from mlpriv_jax.errors import UserError, integer


def bind(host: str, port: int) -> socket.socket:
  """A listening TCP socket on host:port (port 0: a free one chosen by the OS, race-free under pytest-xdist)."""
  port = integer(port, "--port", at_least=0, at_most=65535)
  try:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  except socket.gaierror as e:
    raise UserError(f"cannot resolve host {host!r}: {e.strerror}") from None
  family, _, _, _, address = infos[0]
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a restart need not wait for TIME_WAIT
  try:
    sock.bind(address)
  except OSError as e:
    sock.close()
    raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
  sock.listen(2048)
  return sock


HEADER_TIMEOUT = 10.0   # seconds a connection may take to send a request's headers (slowloris, half-open)


def _protocol(header_timeout: float):
  """uvicorn's h11 protocol with a header read timeout: a connection that has not completed a request's headers
  within `header_timeout` seconds of connecting, or of its last answer, is closed. uvicorn's own keep-alive timer
  is cancelled by any byte received, so a client sending one byte at a time, or nothing at all after connecting,
  would otherwise hold its connection for ever. The body's timeout is the app's (`Served.body_timeout`)."""
  from uvicorn.protocols.http.h11_impl import H11Protocol

  class Protocol(H11Protocol):
    def connection_made(self, transport):
      super().connection_made(transport)
      self._arm()

    def on_response_complete(self):
      super().on_response_complete()
      self._arm()

    def connection_lost(self, exc):
      if getattr(self, "_header_timer", None) is not None:
        self._header_timer.cancel()
      super().connection_lost(exc)

    def _arm(self):
      if getattr(self, "_header_timer", None) is not None:
        self._header_timer.cancel()
      self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

    def _headers_late(self):
      # no request whose headers are complete and whose answer is pending: the headers are late
      if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
        self.transport.close()
  return Protocol


def _server(app, log_level: str, access_log: bool, header_timeout: float = HEADER_TIMEOUT):
  import uvicorn
  return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=access_log, workers=1,
                                       lifespan="on", timeout_graceful_shutdown=5, http=_protocol(header_timeout)))


def serve_forever(app, sock: socket.socket, *, log_level: str = "info", access_log: bool = True,
                  header_timeout: float = HEADER_TIMEOUT) -> None:
  """Serves `app` on `sock` in this thread until interrupted."""
  _server(app, log_level, access_log, header_timeout).run(sockets=[sock])


class BackgroundServer:
  """`with BackgroundServer(app) as s:` serves on 127.0.0.1 (a free port) on a thread; `s.url` is its address.

  Entering waits (up to `timeout` seconds) until uvicorn listens and, with `wait_ready`, until /v2/health/ready
  answers 200; leaving stops the server.
  """

  def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 120.0,
               wait_ready: bool = True, log_level: str = "warning", header_timeout: float = HEADER_TIMEOUT):
    self.app, self.host, self.port, self.timeout, self.wait_ready = app, host, port, timeout, wait_ready
    self.log_level, self.header_timeout = log_level, header_timeout
    self.url: Optional[str] = None

  def __enter__(self):
    sock = bind(self.host, self.port)
    host, port = sock.getsockname()[:2]
    self.url = f"http://{host}:{port}"
    self._server = _server(self.app, self.log_level, False, self.header_timeout)
    self._thread = threading.Thread(target=self._server.run, kwargs=dict(sockets=[sock]), daemon=True,
                                    name="mlpriv-uvicorn")
    self._thread.start()
    deadline = time.monotonic() + self.timeout
    while not self._server.started:
      if not self._thread.is_alive() or time.monotonic() > deadline:
        self.__exit__(None, None, None)
        raise RuntimeError(f"the server on {self.url} did not start within {self.timeout:g} s")
      time.sleep(0.01)
    if self.wait_ready:
      import httpx
      while httpx.get(self.url + "/v2/health/ready", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
          self.__exit__(None, None, None)
          raise RuntimeError(f"the server on {self.url} was not ready within {self.timeout:g} s")
        time.sleep(0.05)
    return self

  def __exit__(self, *exc):
    self._server.should_exit = True
    self._thread.join(timeout=30)
    return False
