"""Build and run the Java probe (``tests/java``): Tidings as a Java producer sees it.

The probe uses only the reference Apache Avro library and Kafka's Java client from Maven Central;
nothing of Tidings. Maven compiles it and copies its jars into ``tests/java/target`` once per
change of ``pom.xml`` or the sources (a stamp holds their digest), because even an offline
``mvn compile`` costs tens of seconds on a busy machine; later runs start the JVM directly.

``make install`` builds it (``python -m tests.java.probe build``), so the cross-language test
never spends its time limit on Maven.

Regenerate the committed reference vectors after adding or changing a schema::

    .venv/bin/python -m tests.java.probe vectors

which rewrites ``tests/java/vectors/fingerprints.json`` (every versioned ``.avsc`` under
``schemas/`` and the 8 fingerprint bytes Java's single-object encoder writes for it) and
``tests/java/vectors/partitions.json`` (Kafka's default partition of sample keys).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TARGET = HERE / "target"
STAMP = TARGET / ".built"
VECTORS = HERE / "vectors"
MAIN = "dev.tidings.javaprobe.Probe"
# Partition counts and keys for partitions.json: entity ids in the shapes the packs use, plus
# edge cases of the hash (empty-ish, non-ASCII, long).
PARTITION_COUNTS = (1, 2, 3, 4, 6, 12, 100)
PARTITION_KEYS = (
    "BK-1", "BK-2", "BK-17", "BK-1000", "INV-42", "APT-7", "ST-0001", "CUST-lagerhaus-9",
    "a", "0", "ä", "Grüße aus Köln", "日本", "x" * 300,
    "0b6d43b8-93c4-4f55-9d9f-4c1ef4a8d2a1", "station:DE*ABC*E1234", "tenant/customer/7",
)


class ProbeError(RuntimeError):
    """The Java probe could not be built or failed."""


def _digest() -> str:
    h = hashlib.sha256()
    for path in [HERE / "pom.xml", *sorted((HERE / "src").rglob("*.java"))]:
        h.update(path.relative_to(HERE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def build() -> list[str]:
    """Compile the probe if its sources changed; return the ``java`` command line that runs it."""
    java = shutil.which("java")
    if java is None:
        raise ProbeError("the Java probe needs java (17+) on PATH")
    digest = _digest()
    if not (STAMP.is_file() and STAMP.read_text().strip() == digest):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ProbeError("building the Java probe needs Apache Maven (Debian: apt-get install maven)")
        cmd = [mvn, "-q", "-B", "-f", str(HERE / "pom.xml"), "compile", "dependency:copy-dependencies",
               f"-DoutputDirectory={TARGET / 'jars'}", "-DincludeScope=runtime"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ProbeError(
                f"building the Java probe failed ({' '.join(cmd)}); javac comes with a JDK "
                f"(Debian: openjdk-17-jdk-headless):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        STAMP.write_text(digest)
    classpath = f"{TARGET / 'classes'}:{TARGET / 'jars'}/*"
    return [java, "-cp", classpath, MAIN]


def run(*args: str, stdin: str = "", timeout: float = 300.0) -> str:
    result = subprocess.run([*build(), *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ProbeError(f"Java probe {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def regenerate_vectors() -> None:
    VECTORS.mkdir(exist_ok=True)
    fingerprints = json.loads(run("fingerprints", str(REPO / "schemas")))
    (VECTORS / "fingerprints.json").write_text(json.dumps(fingerprints, indent=2, sort_keys=True) + "\n")
    partitions = {
        str(n): json.loads(run("partitions", str(n), stdin="\n".join(PARTITION_KEYS) + "\n"))
        for n in PARTITION_COUNTS
    }
    (VECTORS / "partitions.json").write_text(json.dumps(partitions, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{len(fingerprints)} schema fingerprints, {len(PARTITION_KEYS)} keys x {len(PARTITION_COUNTS)} partition counts")


if __name__ == "__main__":
    if sys.argv[1:] == ["vectors"]:
        regenerate_vectors()
    elif sys.argv[1:] == ["build"]:  # `make install` builds it, so no test pays for Maven
        build()
    else:
        sys.exit("usage: python -m tests.java.probe vectors|build")
