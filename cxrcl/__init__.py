"""cxrcl: efficient contrastive representation learning for chest X-rays.

The Python API mirrors the ``cxrcl`` command (see :mod:`cxrcl.api`)::

    import cxrcl
    ds = cxrcl.api.make_phantom("phantom", n=512, size=64)
    run = cxrcl.api.pretrain("spcl", data="phantom", out="runs/spcl", steps=200)
    enc = cxrcl.api.load_encoder("runs/spcl")
    feats = enc.features(ds.images[:16])
"""

__version__ = "0.1.0"
