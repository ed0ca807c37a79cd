"""Pictures a person reads: the bench figures (latency vs mIoU, per-class IoU, drift) and the quant report's.

matplotlib is optional on the device: every module imports it inside its functions (Agg backend), and a missing
one is a UserError. ``label_layout`` places labels without matplotlib; ``common`` loads pyplot and writes PNGs.
"""
