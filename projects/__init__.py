"""Framework plugins: detection (MMDetection), video (MMAction2), translation (Fairseq)."""
