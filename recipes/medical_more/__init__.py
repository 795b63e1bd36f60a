"""MoRE: X-ray / 12-lead ECG / report contrastive pre-training, zero-shot and fine-tuned multi-finding diagnosis."""
