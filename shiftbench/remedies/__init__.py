"""Remedies for domain shift: augment, adversarial, lora, distill, icl."""
