"""A real Apache Kafka broker on loopback, for the demo, the tests and the benchmarks.

One KRaft node in combined mode (broker and controller), started from the jars that
`scripts/setup.sh` resolved from Maven Central. Clients connect as Fink's do:
SASL_PLAINTEXT with SCRAM-SHA-512 users, created when the storage is formatted.
Its data lives in a temporary folder that `stop()` removes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from fink_spark.paths import kafka_jars

log = logging.getLogger(__name__)

ADMIN_USER = "admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"
DEFAULT_USERS = {"fink_user": "fink-user-secret"}


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _jaas(user: str, password: str) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )


@dataclass
class LocalKafka:
    """A single-node KRaft broker on 127.0.0.1 with SCRAM-SHA-512 users.

    Parameters
    ----------
    users
        SCRAM users to create besides the admin (name -> password).
    authorizer
        Enable KRaft's StandardAuthorizer, so that users need ACLs as on Fink's brokers.
    tls
        Serve SASL_SSL instead of SASL_PLAINTEXT, with a certificate for 127.0.0.1 signed
        by a CA made for this broker (`ca_file`, PEM, for the clients' trust store).
    message_max_bytes
        The broker's largest accepted message.
    """

    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    authorizer: bool = False
    tls: bool = False
    message_max_bytes: int = 1_048_588
    heap: str = "768m"
    port: int = 0
    controller_port: int = 0
    workdir: Path | None = None
    admin_password: str = field(default_factory=lambda: uuid.uuid4().hex)
    _process: subprocess.Popen[bytes] | None = None
    _owns_workdir: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    @property
    def ca_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "ca.pem"

    @property
    def log_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "broker.log"

    def client_config(self, user: str | None = None) -> dict[str, str]:
        """librdkafka settings (confluent-kafka) to connect as `user` (default: admin)."""
        name = user or ADMIN_USER
        password = self.admin_password if name == ADMIN_USER else self.users[name]
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.protocol,
            "sasl.mechanisms": SCRAM_MECHANISM,
            "sasl.username": name,
            "sasl.password": password,
        }
        if self.tls:
            config["ssl.ca.location"] = str(self.ca_file)
        return config

    def java_client_properties(self, user: str | None = None) -> str:
        """The same as `client_config`, as a Java client .properties text."""
        name = user or ADMIN_USER
        password = self.admin_password if name == ADMIN_USER else self.users[name]
        return "\n".join(
            [
                f"bootstrap.servers={self.bootstrap}",
                f"security.protocol={self.protocol}",
                f"sasl.mechanism={SCRAM_MECHANISM}",
                f"sasl.jaas.config={_jaas(name, password)}",
                *(["ssl.truststore.type=PEM", f"ssl.truststore.location={self.ca_file}"] if self.tls else []),
                "",
            ]
        )

    def _server_properties(self) -> str:
        assert self.workdir is not None
        protocol = self.protocol
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners={protocol}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners={protocol}://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            f"inter.broker.listener.name={protocol}",
            f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,{protocol}:{protocol}",
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f"listener.name.{protocol.lower()}.scram-sha-512.sasl.jaas.config=" + _jaas(ADMIN_USER, self.admin_password),
            f"log.dirs={self.workdir / 'data'}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            f"message.max.bytes={self.message_max_bytes}",
            f"replica.fetch.max.bytes={max(self.message_max_bytes, 1_048_576)}",
        ]
        if self.tls:
            lines += [
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={self.workdir / 'broker.pem'}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={self.ca_file}",
            ]
        if self.authorizer:
            lines += [
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                f"super.users=User:{ADMIN_USER};User:ANONYMOUS",
                "allow.everyone.if.no.acl.found=false",
            ]
        return "\n".join(lines) + "\n"

    def _java(self, main_class: str, *args: str, log_config: Path) -> list[str]:
        classpath = os.pathsep.join(str(jar) for jar in kafka_jars())
        return [
            "java",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            classpath,
            main_class,
            *args,
        ]

    def start(self, timeout: float = 90.0) -> LocalKafka:
        """Format the storage with the SCRAM users, start the broker, wait until it serves."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="fink-spark-kafka-"))
            self._owns_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        if self.tls:
            self._make_certificates()
        properties = self.workdir / "server.properties"
        properties.write_text(self._server_properties())
        log_config = self.workdir / "log4j2.properties"
        log_config.write_text(
            "rootLogger.level=INFO\n"
            "rootLogger.appenderRef.file.ref=file\n"
            "appender.file.type=File\n"
            "appender.file.name=file\n"
            f"appender.file.fileName={self.log_file}\n"
            "appender.file.layout.type=PatternLayout\n"
            "appender.file.layout.pattern=[%d] %p %m (%c)%n\n"
        )
        scram = [f"--add-scram={SCRAM_MECHANISM}=[name={ADMIN_USER},password={self.admin_password}]"]
        scram += [
            f"--add-scram={SCRAM_MECHANISM}=[name={name},password={password}]"
            for name, password in self.users.items()
        ]
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                f"--config={properties}",
                *scram,
                log_config=log_config,
            ),
            capture_output=True,
            text=True,
        )
        if formatted.returncode != 0:
            raise RuntimeError(f"Formatting the Kafka storage failed:\n{formatted.stderr}")
        self._process = subprocess.Popen(
            self._java("kafka.Kafka", str(properties), log_config=log_config),
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "broker.stderr", "wb"),
            start_new_session=True,
        )
        self._wait_ready(timeout)
        log.info("Kafka broker up at %s (log: %s)", self.bootstrap, self.log_file)
        return self

    def _make_certificates(self) -> None:
        """A CA, and a certificate for 127.0.0.1 that it signs (openssl)."""
        assert self.workdir is not None
        folder = self.workdir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=fink-spark test CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
        openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "broker.crt", "-days", "2", "-copy_extensions", "copy")
        openssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8")
        (folder / "broker.pem").write_text(
            (folder / "broker.pk8").read_text() + (folder / "broker.crt").read_text() + (folder / "ca.pem").read_text()
        )

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._listening():
            if self._process is not None and self._process.poll() is not None:
                break
            time.sleep(0.2)
        admin = AdminClient({**self.client_config(), "logger": log})
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"The Kafka broker exited with code {self._process.returncode}; "
                    f"see {self.log_file}"
                )
            try:
                admin.list_topics(timeout=2)
                return
            except Exception:  # noqa: BLE001 - not up yet: try again until the deadline
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"The Kafka broker did not start within {timeout:.0f} s")

    def _listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def create_topics(self, names: list[str], partitions: int = 1) -> None:
        """Create topics (already existing ones are left as they are)."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({**self.client_config(), "logger": log})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
        for name, future in futures.items():
            try:
                future.result(timeout=30)
            except Exception as error:  # noqa: BLE001
                if "TOPIC_ALREADY_EXISTS" not in str(error):
                    raise RuntimeError(f"Could not create topic {name}: {error}") from error

    def pause(self) -> None:
        """Stop the broker process but keep its data, to restart it with `resume()`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(timeout=60)
            self._process = None

    def resume(self, timeout: float = 90.0) -> None:
        """Start the broker again on the same ports and data after `pause()`."""
        assert self.workdir is not None
        log_config = self.workdir / "log4j2.properties"
        self._process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.workdir / "server.properties"), log_config=log_config),
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "broker.stderr", "ab"),
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def stop(self) -> None:
        """Stop the broker and remove its data."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """Run a broker in the foreground and print how to reach it, until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    broker = LocalKafka().start()
    print(
        json.dumps(
            {"bootstrap": broker.bootstrap, "users": broker.users, "log": str(broker.log_file)},
            indent=2,
        ),
        flush=True,
    )
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop()
        print("broker stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
