"""bench/scaling/configs.py — the named attention configurations of the scaling sweeps.

  dense     one pair (S, 1): every row attends to every key.
  longnet   LongNet-style dilated: segments w_i = 2048 * 4^i with dilations r_i = 2^i, for
            i = 0, 1, ... up to and including the first w_i >= S (dring caps it at S, so the last
            pair spans the whole sequence sparsely). For S = 32768: (2048,1) (8192,2) (32768,4).
  NAME=W,W,..:R,R,..   fixed pairs, the same at every length (dring caps each w at S).
"""

LONGNET_FIRST_SEGMENT = 2048
LONGNET_SEGMENT_GROWTH = 4
LONGNET_DILATION_GROWTH = 2


def parse(spec):
    """'dense' | 'longnet' | 'NAME=W,W:R,R' -> (name, definition)."""
    if spec in ("dense", "longnet"):
        return spec, {"kind": spec}
    name, eq, pairs = spec.partition("=")
    if not eq or not name:
        raise ValueError(f"unknown configuration '{spec}' (dense, longnet, or NAME=W,W,..:R,R,..)")
    segments, colon, dilations = pairs.partition(":")
    try:
        w = [int(x) for x in segments.split(",") if x]
        r = [int(x) for x in dilations.split(",") if x] if colon else [1] * len(w)
    except ValueError:
        raise ValueError(f"'{spec}': segments and dilations must be integers") from None
    if not w or len(w) != len(r) or min(w + r) < 1:
        raise ValueError(f"'{spec}': give as many positive dilations as segments")
    for wi, ri in zip(w, r):
        if wi % ri:
            raise ValueError(f"'{spec}': segment {wi} is not a multiple of its dilation {ri}")
    return name, {"kind": "fixed", "segments": w, "dilations": r}


def pairs(definition, seq):
    """(segments, dilations) to pass to dring run at length seq; empty lists mean dense."""
    kind = definition["kind"]
    if kind == "dense":
        return [], []
    if kind == "fixed":
        return list(definition["segments"]), list(definition["dilations"])
    w, r, segments, dilations = LONGNET_FIRST_SEGMENT, 1, [], []
    while True:
        segments.append(w)
        dilations.append(r)
        if w >= seq:
            return segments, dilations
        w *= LONGNET_SEGMENT_GROWTH
        r *= LONGNET_DILATION_GROWTH


def describe(definition):
    kind = definition["kind"]
    if kind == "dense":
        return "dense: one pair (S, 1)"
    if kind == "longnet":
        return (f"longnet: w = {LONGNET_FIRST_SEGMENT}*{LONGNET_SEGMENT_GROWTH}^i, r = {LONGNET_DILATION_GROWTH}^i, "
                "i = 0.. up to the first w >= S (capped at S)")
    return "fixed: w = " + ",".join(map(str, definition["segments"])) + \
        " r = " + ",".join(map(str, definition["dilations"]))


def pairs_text(segments, dilations, seq):
    """Human form of what ran: '(2048,1) (8192,2) (S,4)'; dense is '(S,1)'."""
    if not segments:
        return f"({seq},1)"
    return " ".join(f"({min(w, seq)},{r})" for w, r in zip(segments, dilations))
