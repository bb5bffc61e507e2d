"""The one table every command writes and ``compare``/``plot`` read (tidy: one row per run).

Each column is declared once here with its type and meaning; docs/schema.md's table is
generated from this list. Commands fill the columns that apply to them; the rest stay null.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hmtbench.errors import HmtbenchError
from hmtbench.files import make_readable
from hmtbench.methods import method_class, method_names
from hmtbench.methods.record import Column

__all__ = ["COLUMNS", "COLUMN_NAMES", "METRIC_DIRECTION", "SHARE_METRICS", "Column", "make_record", "read_results",
           "record_schema", "recording", "schema_markdown", "write_record"]


COLUMNS: list[Column] = [
    # --- identity and provenance
    Column("run_id", "string", "unique id: UTC time, command, method and a random suffix"),
    Column("created_at", "string", "UTC time the run started (ISO 8601)"),
    Column("command", "string", "hmtbench subcommand: eval-ppl, eval-qa, train, bench"),
    Column("command_line", "string", "the full command line as typed"),
    Column("status", "string", "success | failed | canceled"),
    Column("hmtbench_version", "string", "package version"),
    Column("git_commit", "string", "commit of the code that ran: its own checkout, or $HMTBENCH_GIT_COMMIT of a copy"),
    Column("git_dirty", "boolean", "uncommitted changes in that checkout"),
    Column("run_label", "string", "free-text label of the run ($HMTBENCH_RUN_LABEL), never part of git_commit"),
    Column("torch_version", "string", "torch.__version__"),
    Column("transformers_version", "string", "transformers.__version__"),
    Column("python_version", "string", "interpreter version (the built-in corpora depend on it)"),
    Column("cuda_alloc_conf", "string", "$PYTORCH_CUDA_ALLOC_CONF of the run (e.g. expandable_segments:True: it "
           "changes peak memory); null if unset"),
    Column("seed", "Int64", "random seed of the run"),
    Column("name", "string", "short name of the run (--name) that tables and figure legends show; null: named by "
                             "its method and settings"),
    # --- backbone and method
    Column("backbone", "string", "--backbone as given"),
    Column("backbone_resolved", "string", "where the weights came from (hub id, folder, GGUF file, random:ARCH)"),
    Column("weights", "string", "pretrained or random: whether the backbone's weights are real"),
    Column("method", "string", "the method's registry name (plain, full, overlap, rmt, hmt, armt, retrieval, ...)"),
    Column("checkpoint", "string", "folder of trained method parameters, or null (untrained)"),
    Column("checkpoint_sha256", "string", "sha256 of the checkpoint's trained tensors: the same checkpoint anywhere"),
    Column("train_seed", "Int64", "seed of the training behind the run's tensors (train: its --seed; eval: the "
                                  "checkpoint's); null untrained"),
    Column("train_data_seed", "Int64", "seed of that training's data where it was set apart from its seed "
                                       "(train.data_seed); null = the data followed train_seed"),
    Column("train_lora_seed", "Int64", "seed of that training's initial LoRA where it was set apart from its seed "
                                       "(train.lora_seed); null = LoRA followed train_seed"),
    Column("train_recipe", "string", "sha256 (16 hex) of that training's configuration without its seed, folders "
                                     "and name: checkpoints of one recipe at several seeds share it"),
    Column("backbone_params", "Int64", "parameters of the backbone"),
    Column("added_params", "Int64", "parameters the method adds (memory, summary prompt, recall projections, LoRA)"),
    Column("trainable_params", "Int64", "parameters that train (or were trained) in this run"),
    Column("device", "string", "cpu | cuda | ..."),
    Column("device_name", "string", "GPU model or CPU description"),
    Column("dtype", "string", "backbone compute dtype"),
    Column("world_size", "Int64", "processes that ran it (torchrun; 1 = a single process)"),
    # --- segment and memory settings (identical across methods of one comparison)
    Column("segment_length", "Int64", "L: positions per backbone step, memory and sensory included"),
    Column("text_tokens", "Int64", "S = L - 2m - k (ARMT: L - m - k): document tokens per segment for this method"),
    Column("memory_tokens", "Int64", "m: memory tokens at each end (ARMT: after the text only; 0 for plain/full)"),
    Column("sensory_tokens", "Int64", "k: HMT sensory tokens (0 otherwise)"),
    Column("recall_context", "Int64", "N: HMT cached memory embeddings (null otherwise)"),
    Column("recall_hidden_dim", "Int64", "h: HMT query/key width (null otherwise)"),
    Column("sum_fraction", "Float64", "HMT share of a segment read by the summary prompt (null otherwise)"),
    Column("hmt_stage", "Int64", "HMT stage: 1 memory + sensory, 2 with recall (null otherwise)"),
    Column("memory_write", "string", "RMT/HMT: state (the paper's) | span (input embeddings) | span-hard (argmax) | "
                                     "span-hard-st (argmax in training too)"),
    Column("recall_choice", "string", "HMT: soft (the paper's mixture) | hard (the heaviest cached memory alone) | "
                                      "hard-st (in training too)"),
    Column("retrieved_segments", "Int64", "retrieval: the top_k stored segments BM25 puts before each scored segment "
                                          "(null otherwise)"),
    # --- data and protocol
    Column("dataset", "string", "--dataset as given"),
    Column("split", "string", "train | validation | test"),
    Column("selected_on", "string", "where this configuration was chosen (--selected-on): the split its choice was "
                                    "made on, or fixed (set before any evaluation, nothing chosen); null: not stated"),
    Column("protocol", "string", "stream (each token once) | paper (reference windows) | qa"),
    Column("test_length", "Int64", "tokens per document (stream) or history per window (paper)"),
    Column("max_docs", "Int64", "--max-docs, null for all"),
    Column("batch_size", "Int64", "documents or windows per batch, as run: smaller than asked after oom_retries"),
    Column("oom_retries", "Int64", "times the batch was halved on running out of device memory (eval-ppl: scores "
           "equal the asked batch's; bench: measured at batch_size)"),
    Column("docs", "Int64", "documents (stream) or windows (paper) scored"),
    Column("docs_skipped", "Int64", "documents shorter than one segment, skipped"),
    Column("tokens_scored", "Int64", "target tokens scored"),
    Column("bytes_scored", "Int64", "UTF-8 bytes of the scored tokens"),
    Column("data_sha256", "string", "sha256 of the evaluated token ids (provenance.tokens_sha256): same data anywhere"),
    # --- language-model metrics
    Column("nll_mean", "Float64", "mean NLL per scored token (nats)"),
    Column("ppl", "Float64", "exp(sum NLL / scored tokens)"),
    Column("ppl_ci_low", "Float64", "ppl 95% interval, low: percentile bootstrap over documents (paper: windows)"),
    Column("ppl_ci_high", "Float64", "ppl 95% interval, high: percentile bootstrap over documents (paper: windows)"),
    Column("bpb", "Float64", "bits per byte: sum NLL / ln 2 / scored bytes"),
    Column("paper_ppl", "Float64", "paper protocol: mean over batches of exp(batch CE), as the reference reports"),
    Column("segment_nll", "object", "list: summed NLL per segment index (position in the document)"),
    Column("segment_tokens", "object", "list: scored tokens per segment index"),
    Column("doc_nll", "object", "list: summed NLL per document (paper: per window), in the order data_sha256 hashes "
                                "them; compare's paired bootstrap reads it"),
    Column("doc_tokens", "object", "list: scored tokens per document (paper: per window), in that order"),
    # --- question answering (eval-qa)
    Column("task", "string", "QA task name"),
    Column("context_length", "Int64", "QA context tokens requested"),
    Column("answer_ppl", "Float64", "exp(mean NLL of the gold answer tokens)"),
    Column("rouge_l", "Float64", "ROUGE-L F1 of generated answers"),
    Column("f1", "Float64", "token F1 of generated answers"),
    Column("exact_match", "Float64", "exact match of generated answers"),
    Column("exact_match_ci_low", "Float64", "exact_match 95% Wilson interval over samples, low"),
    Column("exact_match_ci_high", "Float64", "exact_match 95% Wilson interval over samples, high"),
    Column("accuracy", "Float64", "answer contained in the generation (passkey, bAbI)"),
    Column("accuracy_ci_low", "Float64", "accuracy 95% Wilson interval over samples, low"),
    Column("accuracy_ci_high", "Float64", "accuracy 95% Wilson interval over samples, high"),
    Column("answers", "string", "eval-qa: where the answer metrics come from: greedy (free decoding, stopped by the "
           "end id, a line break for one-line tasks, or max_new_tokens) | teacher-forced (argmax under the gold "
           "prefix)"),
    Column("teacher_forced_exact", "Float64", "eval-qa: share of samples whose every gold answer token is the argmax "
           "under the gold prefix"),
    Column("decoding_agreement", "Float64", "eval-qa with greedy answers: share of samples whose exact_match equals "
           "their teacher-forced exact match"),
    Column("resumed_samples", "Int64", "eval-qa --resume: samples whose records an interrupted run of the same "
           "evaluation had scored (their batches' time is in wall_s)"),
    Column("read_attention", "object", "eval-qa --set memory_attention=N: list per layer, the mean share of attention "
           "on the memory read slot at the positions that predict answer tokens (heads averaged)"),
    Column("read_attention_uniform", "object", "list per layer: that share were those queries to attend uniformly "
           "to the keys they see (m / (q + 1))"),
    Column("read_attention_text", "object", "list per layer: the read slot's share at every real text position of "
           "every segment"),
    Column("read_attention_text_uniform", "object", "list per layer: the uniform share at those positions"),
    Column("read_attention_samples", "Int64", "samples the read_attention columns were measured on (the cell's "
           "first)"),
    Column("swap_own_exact", "Float64", "eval-qa --set memory_swap=N: share of the cell's first N samples answered "
           "exactly (teacher-forced) with their own state"),
    Column("swap_own_exact_swapped", "Float64", "the same, each sample's answer segment opening with another "
           "sample's state (row r reads row r + 1's)"),
    Column("swap_donor_exact_swapped", "Float64", "with that state, the share that give the donor sample's answer"),
    Column("swap_samples", "Int64", "samples the swap_* columns were measured on"),
    Column("by_depth", "object", 'needle tasks: list of {"depth", "n", "accuracy", "exact_match"} per needle depth'),
    Column("predictions_file", "string", "JSONL of per-sample predictions"),
    # --- training (train)
    Column("train_mode", "string", "memory | lora | full: what of the backbone trained"),
    Column("steps", "Int64", "optimizer steps run"),
    Column("final_loss", "Float64", "training loss at the last step"),
    Column("curriculum_segments", "Int64", "answer training: segments per training context the curriculum reached"),
    Column("train_budget", "Int64", "the token budget its training had (train.max_tokens: the rule for equal "
                                    "budgets); null = its steps alone"),
    Column("train_tokens", "Int64", "tokens the trained tensors read, over every stage and chunk of their training "
                                    "(train: up to this run's end; eval: the checkpoint's); null = untrained or "
                                    "not recorded"),
    Column("recipe", "string", "train: the --recipe the run was started from"),
    Column("output_dir", "string", "run folder with checkpoints and logs"),
    # --- cost
    Column("peak_gpu_mem_mb", "Float64", "torch.cuda.max_memory_allocated over the measured work (MiB)"),
    Column("peak_host_mem_mb", "Float64", "peak resident memory of the process (MiB)"),
    Column("wall_s", "Float64", "seconds of the measured work (loading excluded)"),
    Column("tokens_per_s", "Float64", "tokens processed per second of wall_s (eval-qa: tokens_skipped not counted)"),
    Column("tokens_skipped", "Int64", "eval-qa: prompt tokens never run, since no state carries them to an answer "
                                      "(plain: all but the answer's segments; overlap: one segment more)"),
    Column("ms_per_segment", "Float64", "milliseconds per segment step (bench)"),
    Column("timed_calls", "Int64", "bench: timed calls of the case (tokens_per_s and ms_per_segment are their "
                                   "median; a case stops after --max-seconds, one call at least)"),
    Column("call_seconds", "object", "bench: list: seconds of each timed call, in order (their spread)"),
    Column("warmup_s", "Float64", "bench: seconds of the untimed warm-up calls (compilation and graph capture)"),
    Column("model_tflops", "Float64", "bench: linear-layer TFLOP/s achieved on text tokens (benchmark/roofline.py)"),
    Column("peak_flops_pct", "Float64", "bench: model_tflops as % of the GPU's dense bf16 peak"),
    Column("backbone_flops_pct", "Float64", "bench: peak_flops_pct counting every position the backbone runs "
                                            "(memory, sensory, summary), not only text tokens"),
    Column("bandwidth_bound_pct", "Float64", "bench eval: tokens/s as % of the weight-bandwidth bound of the batch"),
    # --- everything else
    Column("config", "string", "the full resolved configuration as JSON"),
]

COLUMN_NAMES = [c.name for c in COLUMNS]
_recordings: list[list[Path]] = []  # the lists ``recording`` blocks fill, innermost last

# Which way is better, per metric: compare and plot read this, never a special case.
METRIC_DIRECTION: dict[str, str] = {
    "ppl": "lower", "paper_ppl": "lower", "nll_mean": "lower", "bpb": "lower", "answer_ppl": "lower",
    "rouge_l": "higher", "f1": "higher", "exact_match": "higher", "accuracy": "higher",
    "teacher_forced_exact": "higher", "decoding_agreement": "higher",
    "peak_gpu_mem_mb": "lower", "peak_host_mem_mb": "lower", "wall_s": "lower", "tokens_per_s": "higher",
    "ms_per_segment": "lower", "final_loss": "lower", "added_params": "lower", "trainable_params": "lower",
    # not written by a run: derived from by_depth when records are read (hmtbench.analysis.columns.DEEP_SCORES)
    "accuracy_deep": "higher", "exact_match_deep": "higher",
}
# Metrics that are shares of samples, so any interval of theirs lies within [0, 1].
SHARE_METRICS = frozenset({"rouge_l", "f1", "exact_match", "accuracy", "teacher_forced_exact", "decoding_agreement",
                           "accuracy_deep", "exact_match_deep"})


def record_schema(method: str | None) -> list[Column]:
    """The columns of a record of ``method``: the shared ones, then those the method declares (``record_schema``
    of its class; none for a name the registry does not know). A method may not redeclare a shared column."""
    try:
        declared = list(method_class(method).record_schema) if method else []
    except HmtbenchError:
        declared = []
    taken = [c.name for c in declared if c.name in COLUMN_NAMES]
    if taken:
        raise HmtbenchError(f"method {method!r} declares record columns {taken} the shared schema already has; "
                            "rename them in its record_schema")
    return [*COLUMNS, *declared]


def make_record(values: dict[str, Any]):
    """A one-row DataFrame with every column of ``record_schema(values["method"])`` in order."""
    import pandas as pd

    columns = record_schema(values.get("method"))
    unknown = set(values) - {c.name for c in columns}
    if unknown:
        raise HmtbenchError(f"record columns {sorted(unknown)} are not in the result schema: a shared column belongs "
                            f"in hmtbench/results/schema.py, one of method {values.get('method')!r} in its class's "
                            "record_schema")
    return pd.DataFrame({c.name: pd.Series([values.get(c.name)], dtype=c.dtype) for c in columns})


def write_record(record, out_dir: str | Path, run_id: str) -> Path:
    """Write atomically to ``out_dir/run_id.parquet`` (temp file, then rename); never overwrite."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{run_id}.parquet"
    if target.exists():
        raise FileExistsError(f"{target} exists; run ids are unique, refusing to overwrite")
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{run_id}.", suffix=".tmp")
    os.close(fd)
    try:
        record.to_parquet(tmp, index=False)
        make_readable(tmp)  # mkstemp makes 0600
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for written in _recordings:
        written.append(target)
    return target


@contextlib.contextmanager
def recording() -> Iterator[list[Path]]:
    """A list of the records written inside the block, filled as they are written (the CLI names them on Ctrl-C)."""
    written: list[Path] = []
    _recordings.append(written)
    try:
        yield written
    finally:
        _recordings.remove(written)


def read_results(paths: list[str | Path], on_skip=None):
    """Every result parquet under ``paths`` (recursively) as one DataFrame.

    A file that is not a readable hmtbench record is skipped and reported through ``on_skip(path, reason)``.
    """
    import pandas as pd

    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.parquet")) if p.is_dir() else [p])
    frames = []
    for f in files:
        try:
            frame = pd.read_parquet(f)
        except Exception as err:  # corrupt or not parquet: report, never crash
            if on_skip:
                on_skip(f, f"unreadable ({type(err).__name__})")
            continue
        missing = {"run_id", "method", "command"} - set(frame.columns)
        if missing:
            if on_skip:
                on_skip(f, f"not an hmtbench result (no {', '.join(sorted(missing))})")
            continue
        frame["source_file"] = str(f)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*COLUMN_NAMES, "source_file"])
    return pd.concat(frames, ignore_index=True)


def schema_markdown() -> str:
    """docs/schema.md's table, generated from COLUMNS and the registered methods' own columns (a test keeps
    docs/schema.md in sync)."""
    declared = {c.name: c for name in method_names() for c in method_class(name).record_schema}
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.dtype} | {c.doc} |" for c in [*COLUMNS, *declared.values()]]
    return "\n".join(lines)
