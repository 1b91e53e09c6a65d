"""One Chromium page's receive rate: asgi-rt-client on asgi_rt against socket.io-client on
python-socketio (``python -m bench.browser_client``; needs ``make js`` and
``npm ci --prefix bench/js`` first; not part of ``make test``).

The page asks its server for a blast of N messages to its room and counts them in a
handler that does nothing else (no rendering); the figure is N over the time from the
ask to the last message, on the page's clock. It therefore includes the server's fan-out
of each message, as a user sees it. Also prints each bundle's size minified and gzipped.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import statistics
import subprocess
import sys

from playwright.async_api import async_playwright

from .browser_client_server import BUNDLES

N = int(os.environ.get("BENCH_N", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RUN = {
    "asgi_rt": """async (n) => {
      const A = await import("/client.js");
      const client = new A.RtClient({url: `ws://${location.host}/ws/lobby`});
      let count = 0, done;
      const finished = new Promise((resolve) => (done = resolve));
      client.subscribe("lobby", {message: () => { if (++count === n) done(performance.now()); }});
      await new Promise((resolve) => { client.on("connected", resolve); client.connect(); });
      const t0 = performance.now();
      client.request("blast", n, {timeout: 600000});
      const t1 = await finished;
      client.close();
      return n / ((t1 - t0) / 1000);
    }""",
    "socketio": """async (n) => {
      const { io } = await import("/client.js");
      const socket = io({transports: ["websocket"]});
      let count = 0, done;
      const finished = new Promise((resolve) => (done = resolve));
      socket.on("msg", () => { if (++count === n) done(performance.now()); });
      await new Promise((resolve) => socket.on("connect", resolve));
      const t0 = performance.now();
      socket.emit("blast", n);
      const t1 = await finished;
      socket.close();
      return n / ((t1 - t0) / 1000);
    }""",
}


# asgi-rt-client alone: frames fed straight into its socket's onmessage (the WebSocket
# seam), so the figure is the client's own cost per frame (parse, de-duplicate, dispatch).
CLIENT_ONLY = """async (n) => {
  const A = await import("/client.js");
  let socket;
  class Fake { constructor() { socket = this; setTimeout(() => this.onopen(), 0); }
               send() {} close() {} }
  const client = new A.RtClient({url: "ws://x/ws/lobby", WebSocket: Fake});
  let count = 0;
  client.subscribe("lobby", {message: () => { count += 1; }});
  await new Promise((resolve) => { client.on("connected", resolve); client.connect(); });
  socket.onmessage({data: '{"type":"joined","room":"lobby","seq":0,"epoch":"e"}'});
  const frames = Array.from({length: n}, (_, i) =>
    `{"room":"lobby","seq":${i + 1},"epoch":"e","data":{"type":"message","text":"hello ${i}"}}`);
  const t0 = performance.now();
  for (const data of frames) socket.onmessage({data});
  const t1 = performance.now();
  if (count !== n) throw new Error(`got ${count} of ${n}`);
  return n / ((t1 - t0) / 1000);
}"""


def serve(variant: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "--factory", "bench.browser_client_server:app",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(command, env={**os.environ, "BENCH_VARIANT": variant})


async def rate(variant: str, port: int, script: str | None = None) -> float:
    proc = serve(variant, port)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page()
            for _ in range(100):  # until uvicorn listens
                try:
                    await page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            result = float(await page.evaluate(script or RUN[variant], N))
            await browser.close()
            return result
    finally:
        proc.terminate()
        proc.wait(10)


def sizes() -> None:
    for variant, path in BUNDLES.items():
        data = path.read_bytes()
        print(f"{variant:9} bundle {path.name}: {len(data)} B min, "
              f"{len(gzip.compress(data, 9))} B min+gz")  # fmt: skip


async def main() -> None:
    sizes()
    results: dict[str, list[float]] = {"asgi_rt": [], "socketio": []}
    for round_ in range(ROUNDS):
        for variant in results:
            results[variant].append(await rate(variant, 18765 + round_))
            print(f"round {round_ + 1} {variant:9} {results[variant][-1]:9.0f} msgs/s", flush=True)
    medians = {variant: statistics.median(rates) for variant, rates in results.items()}
    for variant, median in medians.items():
        print(f"{variant:9} median {median:9.0f} msgs/s (N={N}, {ROUNDS} rounds)")
    print(f"asgi_rt / socketio: {medians['asgi_rt'] / medians['socketio']:.2f}x")
    alone = [await rate("asgi_rt", 18800 + r, CLIENT_ONLY) for r in range(ROUNDS)]
    print(f"asgi-rt-client alone (no server): median {statistics.median(alone):9.0f} msgs/s")


if __name__ == "__main__":
    asyncio.run(main())
