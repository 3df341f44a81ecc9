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


def _server(app, log_level: str, access_log: bool):
  import uvicorn
  return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=access_log, workers=1,
                                       lifespan="on", timeout_graceful_shutdown=5))


def serve_forever(app, sock: socket.socket, *, log_level: str = "info", access_log: bool = True) -> None:
  """Serves `app` on `sock` in this thread until interrupted."""
  _server(app, log_level, access_log).run(sockets=[sock])


class BackgroundServer:
  """`with BackgroundServer(app) as s:` serves on 127.0.0.1 (a free port) on a thread; `s.url` is its address.

  Entering waits (up to `timeout` seconds) until uvicorn listens and, with `wait_ready`, until /v2/health/ready
  answers 200; leaving stops the server.
  """

  def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 120.0,
               wait_ready: bool = True, log_level: str = "warning"):
    self.app, self.host, self.port, self.timeout, self.wait_ready = app, host, port, timeout, wait_ready
    self.log_level = log_level
    self.url: Optional[str] = None

  def __enter__(self):
    sock = bind(self.host, self.port)
    host, port = sock.getsockname()[:2]
    self.url = f"http://{host}:{port}"
    self._server = _server(self.app, self.log_level, False)
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
