"""A throwaway PKI made with the openssl command line, for the TLS and principal tests.

make_pki(d) builds a root CA `ca` and another `other`; an intermediate and
the server's certificate from it (chain.pem: server then intermediate, for
--tls-cert); client certificates `client` (from ca), `stranger` (from other)
and `expired`; and garbage.pem. client_cert() adds more client certificates
with any subject and subjectAltNames. Pki(d).name_ext is the path d/name.ext.
"""

import subprocess


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (args, r.stderr)


def make_key_csr(d, name, cn, subj=None):
    """A key and CSR; subj: the whole subject in openssl's /X=../Y=.. form (default /CN=cn)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", subj or f"/CN={cn}", cwd=d)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)


def sign(d, name, ca, ext):
    (d / f"{name}.ext").write_text(ext)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


class Pki:
    def __init__(self, d):
        self.dir = d

    def __getattr__(self, name):
        return str(self.dir / name.replace("_", "."))


def make_pki(d):
    make_ca(d, "ca")
    make_ca(d, "other")
    # The server's certificate from an intermediate: --tls-cert is the chain, the client trusts the root.
    make_key_csr(d, "inter", "intermediate")
    sign(d, "inter", "ca", "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n")
    make_key_csr(d, "server", "localhost")
    sign(d, "server", "inter", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "chain.pem").write_text((d / "server.pem").read_text() + (d / "inter.pem").read_text())
    client_ext = "extendedKeyUsage=clientAuth\n"
    make_key_csr(d, "client", "client-good")
    sign(d, "client", "ca", client_ext)
    make_key_csr(d, "stranger", "client-other-ca")
    sign(d, "stranger", "other", client_ext)
    # Expired: `openssl x509 -req` (3.0) cannot back-date, `openssl ca` can.
    make_key_csr(d, "expired", "client-expired")
    (d / "newcerts").mkdir()
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = dflt\n[dflt]\ndir = {d}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/newcerts\n"
        "serial = $dir/serial\ndefault_md = sha256\npolicy = any\nx509_extensions = ext\n"
        "[any]\ncommonName = supplied\n[ext]\nextendedKeyUsage = clientAuth\n")
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "expired.csr",
            "-out", "expired.pem", "-notext", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
            cwd=d)
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    return Pki(d)


def client_cert(d, name, subj, san=None, ca="ca"):
    """A client certificate d/name.pem (key d/name.key) signed by `ca`, with this subject and subjectAltName."""
    make_key_csr(d, name, None, subj=subj)
    ext = "extendedKeyUsage=clientAuth\n" + (f"subjectAltName={san}\n" if san else "")
    sign(d, name, ca, ext)
