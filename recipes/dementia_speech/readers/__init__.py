"""The real-format readers of the dementia recipe: CHAT transcripts (:mod:`.chat`) and the ADReSS challenge layout
(:mod:`.adress`), which the embedded cohort is written in too."""
