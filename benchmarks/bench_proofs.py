"""Proven ciphertexts: what a proof that each ciphertext holds 0 or 1 costs, in one run.

Usage (from the repository root):

    .venv/bin/python benchmarks/bench_proofs.py           # 2048-bit, 4,000 ciphertexts
    .venv/bin/python benchmarks/bench_proofs.py --quick   # 1,000 ciphertexts

Prints one table: per ciphertext, on one core, the time to encrypt with ``phe``
(the peer), with Headcount's short-exponent ``Encryptor`` (the unproven path),
to encrypt with a proof (``paillier.Prover``: an indicator's {0, 1}, a lone
{0}, and a grouped count's {0, one slot per category} with 6 categories), and to
verify those proofs in one batch (``paillier.verify_batch``), each with its ratio
to ``phe``'s encryption measured in the same run; then the online cost with the
pairs drawn from a ``ProofPool``, and a hop's worth (``--hop``) verified as a
receiving node does, in worker processes. Each figure is the best of
three rounds, so a neighbour's burst of load hurts all rows alike. Then what
that means for a query at 100,000 and 1,000,000 records a department: the
origin proves one ciphertext per record and one fill per record of the next
node, and the next node verifies all of them. The load average is printed.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable

from headcount.crypto import paillier


def _best(fn: Callable[[], object], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, default=2048, choices=(1024, 2048, 3072))
    parser.add_argument("--count", type=int, default=4000, help="ciphertexts per row")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 ciphertexts (the hop stays 40,000)"
    )
    parser.add_argument(
        "--hop", type=int, default=100_000, help="ciphertexts verified as one hop (default 100,000)"
    )
    args = parser.parse_args()
    count = 1000 if args.quick else args.count
    if args.quick:
        args.hop = 40_000
    print(f"load average {os.getloadavg()[0]:.1f}; {args.bits}-bit key; {count:,} ciphertexts")
    pub, _ = paillier.generate_keypair(args.bits)
    phe_key = pub.phe
    bits = [i % 2 for i in range(count)]
    indicator = paillier.ProofLayout(pub, (0, 1), b"bench")
    fill = paillier.ProofLayout(pub, (0,), b"bench")
    grouped_values = (0, *(1 << (40 * j) for j in range(6)))
    grouped = paillier.ProofLayout(pub, grouped_values, b"bench")
    grouped_plain = [grouped_values[i % 7] for i in range(count)]
    encryptor = paillier.Encryptor.for_public_key(pub)
    provers = {lay: paillier.Prover(lay) for lay in (indicator, fill, grouped)}
    phe_n = max(200, count // 10)  # phe is slow: time fewer and scale
    rows: list[tuple[str, float]] = [
        (
            "phe encrypt (peer)",
            _best(lambda: [phe_key.raw_encrypt(b) for b in bits[:phe_n]]) / phe_n,
        ),
        ("Encryptor.encrypt, unproven", _best(lambda: encryptor.encrypt(bits)) / count),
    ]
    proven: dict[str, list[bytes]] = {}
    for name, lay, plain in (
        ("indicator {0,1}", indicator, bits),
        ("a lone {0}", fill, [0] * count),
        ("grouped count, 6 categories", grouped, grouped_plain),
    ):
        prover = provers[lay]
        items = proven[name] = prover.encrypt(plain)
        prove_s = _best(functools.partial(prover.encrypt, plain))
        verify_s = _best(functools.partial(paillier.verify_batch, lay, items))
        rows += [(f"prove: {name}", prove_s / count), (f"verify (batch): {name}", verify_s / count)]
    # The online cost when the pairs were drawn ahead of time (party nodes keep
    # a ProofPool filled in the background): what a query waits for.
    pool = paillier.ProofPool(pub, 3 * count)
    pool.wait_full()
    pooled = paillier.Prover(indicator, pool)
    start = time.perf_counter()
    pooled.encrypt(bits)
    rows.append(
        ("prove online, pairs pooled: indicator {0,1}", (time.perf_counter() - start) / count)
    )
    rows.append(("  (pool refill, CPU per proof)", pool.refill_cpu_s / (3 * count)))
    pool.stop()
    # A hop's worth: proven in bulk, verified as a receiving node does, in
    # sub-batches on worker processes (proofs.PARALLEL_FROM and above).
    big = max(args.hop, count)
    items = paillier.Prover(indicator).encrypt([i % 2 for i in range(big)])
    start = time.perf_counter()
    verifier = paillier.BatchVerifier(indicator, big)
    for i in range(0, big, 1000):  # the receiving node's chunks
        verifier.add(items[i : i + 1000])
    verifier.finish()
    rows.append(
        (
            f"verify (batch) as a node, {big:,} in worker processes",
            (time.perf_counter() - start) / big,
        )
    )
    peer = rows[0][1]
    print()
    print("| operation | ms per ciphertext | x phe encrypt |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e3:.3f} | {seconds / peer:.2f} |")
    per = dict(rows)
    # The origin proves one ciphertext per record and one fill per record of
    # the next node (fills are proven against the same values); the next node
    # verifies one per record of its own.
    prove = 2 * per["prove online, pairs pooled: indicator {0,1}"]
    offline = 2 * per["prove: indicator {0,1}"]
    verify = rows[-1][1]
    print()
    print(
        "| records a department | origin proves records + fills, online (pooled) "
        "| pairs computed ahead, CPU | next node verifies |"
    )
    print("|---|---|---|---|")
    for n in (100_000, 1_000_000):  # records of the origin and of the next node
        print(f"| {n:,} | {n * prove:.1f} s | {n * offline:.0f} s | {n * verify:.1f} s |")
    sizes = {name: len(items[0]) for name, items in proven.items()}
    print()
    print(
        "bytes per proven ciphertext: "
        + ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        + f" (a bare ciphertext: {pub.ciphertext_bytes})"
    )


if __name__ == "__main__":
    main()
