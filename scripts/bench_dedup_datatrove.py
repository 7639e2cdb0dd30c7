#!/usr/bin/env python3
"""datatrove's side of scripts/bench_dedup.py: one step over the pool with datatrove's LocalPipelineExecutor, set
as close to whetstone's as datatrove's settings allow. Run as its own process by bench_dedup.py; a module (not a
string) because datatrove's workers pickle the adapter, tokenizer and filter defined here.

    bench_dedup_datatrove.py STEP POOL WORK WORKERS        STEP: minhash | exact | filter

Each step writes the documents it removes to WORK/removed/ (JSON lines with their `id`) and the ones it keeps to
WORK/kept/ (Parquet, as whetstone writes its output), and prints `TIMES {"stage": seconds, ...}`.

  minhash  the four MinHash stages: signatures (WORKERS tasks), buckets (14 tasks), clusters (1), filter
           (WORKERS). 5-word shingles, 14 bands × 8 rows, seed 1, text lower-cased and whitespace collapsed
           (whetstone's normalisation: datatrove's punctuation, number and accent folding off), words split on
           whitespace (datatrove's English default is spaCy's tokenizer, which needs spaCy and made 205 of 217 s
           at 200k rows). Every band collision is a duplicate (whetstone's --threshold 0.01 does the same);
           clusters are transitive (union-find), each keeping the root its union by size left (whetstone's keep
           their first row). Not matchable: xxh64 shingle hashes (whetstone: xxh3), numpy's seeded draws and
           (a·x + b) mod 2^61−1 after wrapping products (whetstone: xoshiro's draws, the upper 32 bits of
           (a·x + b) mod 2^64), so the two sample different permutations. Each row carries its
           cluster id (save_cluster_id, load_cluster_ids) for bench_dedup.py to compare the clusters.
  exact    ExactDedupSignature → ExactFindDedups (1 task) → ExactDedupFilter: whetstone's key (prompt and
           response, each lower-cased and whitespace-collapsed), the earliest file's row kept.
  filter   whetstone's four quality rules, ported to Python, as a LambdaFilter (datatrove has none of them:
           its Gopher and C4 filters count other things).
"""

from __future__ import annotations

import json
import re
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from datatrove.utils.word_tokenizers import WordTokenizer

BUCKETS, ROWS_PER_BUCKET, SHINGLE, SEED = 14, 8, 5, 1


def adapter(self, data: dict, path: str, id_in_file: int) -> dict:
    """A pool row as a document: whetstone's MinHash text (prompt, a space, response), the fields kept apart."""
    prompt, response = data["prompt"], data.get("response") or ""
    return {"text": f"{prompt} {response}", "id": data["id"],
            "metadata": {"prompt": prompt, "response": response, "file": path}}


def reader(pool: str) -> ParquetReader:
    return ParquetReader(pool, glob_pattern="*.parquet", adapter=adapter)


class SplitWords(WordTokenizer):
    """Words as whetstone's shingles take them: split on whitespace."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def normalise(text: str) -> str:
    """whetstone's `normalise`: lower case, whitespace collapsed."""
    return " ".join(text.lower().split())


def exact_key(doc) -> str:
    return normalise(doc.metadata["prompt"]) + "\uffff" + normalise(doc.metadata["response"])


FILE_NUMBER = re.compile(r"part-(\d+)\.parquet$")


def earliest_file_first(doc) -> int:
    """Priority in [1, 65535], highest kept: the row of the earliest file, as whetstone keeps the first row read."""
    m = FILE_NUMBER.search(doc.metadata["file"])
    return 65535 - (int(m.group(1)) if m else 0)


REFUSALS = ("as an ai language model", "as an ai assistant", "i'm sorry, but i can't", "i am sorry, but i cannot",
            "i'm sorry, but i cannot", "i cannot fulfill", "i can't assist with", "i cannot help with")


def whetstone_rules(doc) -> bool:
    """whetstone's default `whet filter`: length (characters, per field, in [1, 100000]), repeated word 3-grams
    (at most 50% of them, fields of 6 words or more), symbols (at most 50% of the characters), empty or refused
    responses. True keeps the document."""
    prompt, response = doc.metadata["prompt"], doc.metadata["response"]
    if not 1 <= len(prompt) <= 100_000 or not 1 <= len(response) <= 100_000:
        return False
    for text in (prompt, response):
        words = text.split()
        if len(words) >= 6:
            grams = list(zip(words, words[1:], words[2:]))
            if 1 - len(set(grams)) / len(grams) > 0.5:
                return False
    for text in (prompt, response):
        if text and sum(1 for c in text if not (c.isalnum() or c.isspace())) / len(text) > 0.5:
            return False
    text = response.strip()
    if not text:
        return False
    lower = text.lower().replace("\u2019", "'")
    return not any(r in lower for r in REFUSALS)


def stages(step: str, pool: str, work: str, workers: int) -> list[tuple[str, list, int]]:
    removed = lambda: JsonlWriter(f"{work}/removed", compression=None)  # noqa: E731
    kept = lambda: ParquetWriter(f"{work}/kept")  # noqa: E731
    if step == "minhash":
        from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                              MinhashDedupSignature)
        from datatrove.pipeline.dedup.minhash import MinhashConfig
        from datatrove.utils.text import TextNormConfig

        norm = TextNormConfig(lowercase=True, norm_whitespace=True, remove_punctuation=False,
                              norm_unicode_diacritics=False, norm_numbers=False)
        config = MinhashConfig(n_grams=SHINGLE, num_buckets=BUCKETS, hashes_per_bucket=ROWS_PER_BUCKET, seed=SEED,
                               norm_config=norm)
        return [
            ("signatures", [reader(pool), MinhashDedupSignature(output_folder=f"{work}/signatures", config=config,
                                                                language=SplitWords())], workers),
            ("buckets", [MinhashDedupBuckets(input_folder=f"{work}/signatures", output_folder=f"{work}/buckets",
                                             config=config)], BUCKETS),
            ("clusters", [MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids",
                                              config=config, save_cluster_id=True)], 1),
            ("filter", [reader(pool), MinhashDedupFilter(input_folder=f"{work}/remove_ids", load_cluster_ids=True,
                                                         exclusion_writer=removed()), kept()], workers),
        ]
    if step == "exact":
        from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                          ExactFindDedups)

        config = ExactDedupConfig(content_getter=exact_key, document_priority=earliest_file_first)
        return [
            ("signatures", [reader(pool), ExactDedupSignature(output_folder=f"{work}/signatures", config=config)],
             workers),
            ("find", [ExactFindDedups(data_folder=f"{work}/signatures", output_folder=f"{work}/dups",
                                      config=config)], 1),
            ("filter", [reader(pool), ExactDedupFilter(data_folder=f"{work}/dups", config=config,
                                                       exclusion_writer=removed()), kept()], workers),
        ]
    if step == "filter":
        return [("filter", [reader(pool), LambdaFilter(whetstone_rules, exclusion_writer=removed()), kept()],
                 workers)]
    raise SystemExit(f"unknown step {step!r}: minhash, exact or filter")


def main() -> None:
    step, pool, work, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    times = {}
    for name, pipeline, tasks in stages(step, pool, work, workers):
        start = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                              logging_dir=f"{work}/logs/{name}").run()
        times[name] = time.perf_counter() - start
    print("TIMES " + json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
