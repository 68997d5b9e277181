"""The peer of bench_auth: PyJWT (with the cryptography backend, i.e. OpenSSL underneath)
verifying the same RS256 token with the same public key and the same claim checks, for the
same time, on one thread. Prints one line: verifications per second."""

import sys
import time

import jwt

from cryptography.hazmat.primitives.serialization import load_pem_public_key

token = open(sys.argv[1]).read().strip()
pub = load_pem_public_key(open(sys.argv[2], "rb").read())
seconds, n = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0, 0
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    for _ in range(16):
        jwt.decode(token, pub, algorithms=["RS256"], audience="chat-api", issuer="chat-platform")
    n += 16
print(f"{n / seconds:.0f}")
