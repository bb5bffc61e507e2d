"""hmtbench as an lm-evaluation-harness model: ``--model hmtbench`` runs any lm-eval task through a memory method.

The model lives in ``hmtbench.lmeval.model`` (importing it registers ``hmtbench`` with lm-eval);
nothing here imports lm_eval, so the scoring helpers and the passkey writer work without it.
"""
