"""What sharing images saves: a fresh engine building every image, pulling them, or loading a `docker save`.

    python benchmarks/bench_images.py            # as root; the main engine's images must be built

Starts a registry on 127.0.0.1 (Debian's docker-registry) and three throwaway engines with no image and
debootstrap masked (the helpers of tests/integration/test_images_registry.py), then, in one run:

- build: ``mailtls images build`` on an engine whose registry mirror holds the base: the base is pulled,
  Postfix, Dovecot and James are built from their recipes (what every CI job did before);
- pull: ``mailtls images pull --registry R`` after ``mailtls images push --registry R`` on the main engine;
- load: ``docker load`` of a ``docker save`` of the same images (a CI cache), then ``mailtls images build``,
  which must build nothing.

Every engine ends with the main engine's content tags; the script checks that pull and load give the
very same image ids. Nothing is left behind (engines, registry, tar file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_mailtls import runtime
from pytest_mailtls.grid import DOCKER_SERVERS, get_backend
from tests.integration.test_images_registry import _missing, fresh_engine, local_registry


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        sys.exit(f"bench_images: {what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _docker(*args: str, host: str | None = None) -> float:
    env = {**os.environ, "DOCKER_HOST": host} if host else {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    started = time.perf_counter()
    _check(subprocess.run(["docker", *args], env=env, capture_output=True, text=True), f"docker {args[0]}")
    return time.perf_counter() - started


def main() -> None:
    reason = _missing()
    if reason:
        sys.exit(f"bench_images: {reason}")
    with runtime.using_images(base=runtime.BASE_IMAGE, registry=None):
        tags = {"base": runtime.BASE_IMAGE, **{s: get_backend(s).image() for s in DOCKER_SERVERS}}
    main_client = runtime.docker_client()
    ids = {name: runtime._image_id(main_client, tag) for name, tag in tags.items()}
    sizes = {name: main_client.api.inspect_image(tag)["Size"] / 1e6 for name, tag in tags.items()}
    print(f"images: {', '.join(f'{t} ({sizes[n]:.0f} MB)' for n, t in tags.items())}")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mailtls-bench-images-") as tmp, local_registry(Path(tmp) / "r") as reg:
        runtime.push_image(runtime.BASE_IMAGE, f"{reg}/library")  # the registry doubles as a Docker Hub mirror
        started = time.perf_counter()
        push = subprocess.run(
            [sys.executable, "-m", "pytest_mailtls", "images", "push", "--registry", reg],
            capture_output=True,
            text=True,
        )
        _check(push, "images push")
        figures["push from the main engine"] = time.perf_counter() - started

        with fresh_engine(mirror=reg) as engine:
            started = time.perf_counter()
            _check(engine.run_mailtls("images", "build"), "images build on a fresh engine")
            figures["build (base pulled via the mirror)"] = time.perf_counter() - started
        with fresh_engine() as engine:
            started = time.perf_counter()
            _check(engine.run_mailtls("images", "pull", "--registry", reg), "images pull")
            figures["pull --registry"] = time.perf_counter() - started
            pulled = {name: runtime._image_id(engine.client, tag) for name, tag in tags.items()}
        tar = Path(tmp) / "images.tar"
        figures["docker save (main engine)"] = _docker("save", "-o", str(tar), *tags.values())
        tar_mb = tar.stat().st_size / 1e6
        with fresh_engine() as engine:
            figures["docker load"] = _docker("load", "-i", str(tar), host=engine.host)
            tar.unlink()
            started = time.perf_counter()
            after = engine.run_mailtls("images", "build")
            _check(after, "images build after docker load")
            figures["images build after load"] = time.perf_counter() - started
            loaded = {name: runtime._image_id(engine.client, tag) for name, tag in tags.items()}
            if "building image" in after.stderr:
                sys.exit(f"bench_images: images build after docker load built something:\n{after.stderr}")
    if pulled != ids or loaded != ids:
        sys.exit(f"bench_images: image ids differ: main {ids}, pulled {pulled}, loaded {loaded}")
    build = figures["build (base pulled via the mirror)"]
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; docker save tar: {tar_mb:.0f} MB")
    print("| step on a fresh engine | wall | against building |")
    print("|---|---|---|")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.1f} s | {build / seconds:.1f}x |" if seconds else f"| {name} | - | - |")
    print("pull and load gave the main engine's image ids for every tag")


if __name__ == "__main__":
    main()
