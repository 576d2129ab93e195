"""evaluation: how images are measured.

Reconstruction and distribution metrics (:mod:`.metrics`: PSNR, SSIM, LPIPS, FID / IS /
precision-recall through torch-fidelity), perceptual networks loaded safely from local weights
(:mod:`.perceptual`), the feature spaces those metrics use (:mod:`.feature_spaces`), and the small
classifier trained on a dataset's own split to serve as one (:mod:`.feature_classifier`,
``python -m evaluation.train_classifier``), and the digits' own 8×8 space with a classifier fitted
apart from the project (:mod:`.digit_space`).
"""
