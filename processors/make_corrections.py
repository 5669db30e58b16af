"""Write the small correctionlib CorrectionSet used by the demo processors and the systematics tests.

Usage::

    python processors/make_corrections.py processors/data/corrections.json

The set holds three corrections, built with :mod:`correctionlib.schemav2` pydantic models:

``lepton_sf`` (inputs ``pt``, ``abseta``, ``systematic``)
    A binned muon/electron identification scale factor over pt [GeV] x |eta| with a string category
    ``systematic`` in ``nominal``/``up``/``down``. Values outside the pt/|eta| range are clamped to the
    first/last bin.
``btag_var`` (inputs ``pt``, ``index``, ``direction``)
    The b-tagging weight variation of the IRIS-HEP Analysis Grand Challenge ttbar analysis: for each of
    the four leading jets (``index`` 0..3) the weight is ``1 + 0.075 * pt / 50`` for ``direction="up"``,
    ``1 - 0.075 * pt / 50`` for ``"down"`` and ``1`` for ``"nominal"``.
``jes_delta`` (inputs ``pt``, ``abseta``)
    A toy relative jet energy scale uncertainty delta, binned in pt x |eta| (clamped), for
    :class:`distproc.systematics.Scale`.

The output is deterministic (no random numbers, no time stamps), so regenerating it leaves
``processors/data/corrections.json`` unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import correctionlib.schemav2 as cs

LEPTON_PT_EDGES = [10.0, 20.0, 35.0, 50.0, 100.0, 200.0]
LEPTON_ABSETA_EDGES = [0.0, 0.9, 1.2, 2.1, 2.5]
JES_PT_EDGES = [15.0, 30.0, 50.0, 100.0, 200.0, 500.0, 3000.0]
JES_ABSETA_EDGES = [0.0, 1.3, 2.5, 3.0, 5.2]


def _lepton_values(systematic: str) -> list[float]:
    """Flat (pt-major) list of lepton scale factors for one systematic."""
    values = []
    for ipt in range(len(LEPTON_PT_EDGES) - 1):
        for ieta in range(len(LEPTON_ABSETA_EDGES) - 1):
            nominal = 0.93 + 0.012 * ipt - 0.01 * ieta
            uncertainty = 0.01 + 0.005 * ieta + (0.01 if ipt == 0 else 0.0)
            shift = {"nominal": 0.0, "up": uncertainty, "down": -uncertainty}[systematic]
            values.append(round(nominal + shift, 6))
    return values


def lepton_sf() -> cs.Correction:
    """Binned lepton scale factor in pt x |eta| with a nominal/up/down string category."""
    return cs.Correction(
        name="lepton_sf",
        description="Toy muon/electron ID scale factor binned in pt [GeV] x |eta|; clamped out of range.",
        version=1,
        inputs=[
            cs.Variable(name="pt", type="real", description="lepton transverse momentum [GeV]"),
            cs.Variable(name="abseta", type="real", description="absolute pseudorapidity"),
            cs.Variable(name="systematic", type="string", description="nominal, up or down"),
        ],
        output=cs.Variable(name="weight", type="real", description="multiplicative event weight"),
        data=cs.Category(
            nodetype="category",
            input="systematic",
            content=[
                cs.CategoryItem(
                    key=systematic,
                    value=cs.MultiBinning(
                        nodetype="multibinning",
                        inputs=["pt", "abseta"],
                        edges=[LEPTON_PT_EDGES, LEPTON_ABSETA_EDGES],
                        content=_lepton_values(systematic),
                        flow="clamp",
                    ),
                )
                for systematic in ("nominal", "up", "down")
            ],
        ),
    )


def btag_var() -> cs.Correction:
    """AGC ttbar b-tagging variation: ``1 +- 0.075 * pt / 50`` for each of the four leading jets."""
    directions = {"up": "1 + 0.075 * x / 50", "down": "1 - 0.075 * x / 50", "nominal": "1 + 0 * x"}
    return cs.Correction(
        name="btag_var",
        description="AGC ttbar b-tagging weight variation per leading jet: 1 +- 0.075 * pt / 50.",
        version=1,
        inputs=[
            cs.Variable(name="pt", type="real", description="jet transverse momentum [GeV]"),
            cs.Variable(name="index", type="int", description="leading-jet index 0..3"),
            cs.Variable(name="direction", type="string", description="nominal, up or down"),
        ],
        output=cs.Variable(name="weight", type="real", description="multiplicative event weight"),
        data=cs.Category(
            nodetype="category",
            input="index",
            content=[
                cs.CategoryItem(
                    key=index,
                    value=cs.Category(
                        nodetype="category",
                        input="direction",
                        content=[
                            cs.CategoryItem(
                                key=direction,
                                value=cs.Formula(
                                    nodetype="formula",
                                    expression=expression,
                                    parser="TFormula",
                                    variables=["pt"],
                                ),
                            )
                            for direction, expression in directions.items()
                        ],
                    ),
                )
                for index in range(4)
            ],
        ),
    )


def jes_delta() -> cs.Correction:
    """Toy relative jet energy scale uncertainty, binned in pt x |eta| (clamped)."""
    content = []
    for ipt in range(len(JES_PT_EDGES) - 1):
        for ieta in range(len(JES_ABSETA_EDGES) - 1):
            content.append(round(0.04 - 0.005 * ipt + 0.01 * ieta, 6))
    return cs.Correction(
        name="jes_delta",
        description="Toy relative jet energy scale uncertainty delta (pt -> pt * (1 +- delta)).",
        version=1,
        inputs=[
            cs.Variable(name="pt", type="real", description="jet transverse momentum [GeV]"),
            cs.Variable(name="abseta", type="real", description="absolute pseudorapidity"),
        ],
        output=cs.Variable(name="delta", type="real", description="relative uncertainty"),
        data=cs.MultiBinning(
            nodetype="multibinning",
            inputs=["pt", "abseta"],
            edges=[JES_PT_EDGES, JES_ABSETA_EDGES],
            content=content,
            flow="clamp",
        ),
    )


def build() -> cs.CorrectionSet:
    """The complete CorrectionSet written by this script."""
    return cs.CorrectionSet(
        schema_version=2,
        description="distproc demo corrections (toy values; see processors/make_corrections.py)",
        corrections=[lepton_sf(), btag_var(), jes_delta()],
    )


def main(argv: list[str] | None = None) -> int:
    """Write the CorrectionSet to the path given on the command line; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python processors/make_corrections.py OUT.json\n"
            "  e.g. python processors/make_corrections.py processors/data/corrections.json",
            file=sys.stderr,
        )
        return 2
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build().model_dump_json(exclude_unset=True, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
