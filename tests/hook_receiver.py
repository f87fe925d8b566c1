"""A real HTTP receiver for REST-hook deliveries: records every POST (headers and body) and answers the statuses it
is told to, in order (then the last one for good)."""

import json
import ssl
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, statuses=(200,), delay: float = 0.0, hold_first: bool = False, tls=None):
        self.statuses = list(statuses)
        self.delay = delay
        # hold_first: the first POST gets no answer until release() (a relay can be killed while it waits)
        self.gate = threading.Event() if hold_first else None
        self.location: str | None = None  # sent with every answer when set (a redirect)
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                    receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "status": status})
                receiver.arrived.set()
                if receiver.gate is not None and len(receiver.received) == 1:
                    receiver.gate.wait(60)
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:  # (certificate file, key file): an https:// receiver
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="hook-receiver")

    def __enter__(self):
        self.thread.start()
        return self

    def release(self):
        if self.gate is not None:
            self.gate.set()

    def __exit__(self, *exc):
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(item["body"]) for item in self.received]

    def accepted(self) -> list[dict]:
        """The POSTs it answered with a 2xx: what a Zap would have run on."""
        with self.lock:
            return [json.loads(item["body"]) for item in self.received if 200 <= item["status"] < 300]


def certificates(tmp_path, name: str):
    """A test CA, and a certificate for `name` signed by it: (ca file, certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)

    def build(subject, issuer, public_key, signing_key, ca: bool, san=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_name, leaf_key.public_key(), ca_key,
                 False, san=name)
    files = tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "leaf.key"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return [str(path) for path in files]
