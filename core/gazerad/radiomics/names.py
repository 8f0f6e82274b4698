"""Feature classes and feature names, in pyradiomics' naming (``<class>_<Feature>``).

The torch backend and the pyradiomics backend both return features in exactly this
order, so a feature matrix from one can be compared column by column with the other.
Deprecated pyradiomics features (``StandardDeviation``, ``Dissimilarity`` ...) are not
computed, as in pyradiomics' default extractor.
"""

from __future__ import annotations

__all__ = ["FEATURE_CLASSES", "CLASS_FEATURES", "feature_names"]

FEATURE_CLASSES: tuple[str, ...] = ("firstorder", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm")

CLASS_FEATURES: dict[str, tuple[str, ...]] = {
    "firstorder": (
        "10Percentile",
        "90Percentile",
        "Energy",
        "Entropy",
        "InterquartileRange",
        "Kurtosis",
        "Maximum",
        "MeanAbsoluteDeviation",
        "Mean",
        "Median",
        "Minimum",
        "Range",
        "RobustMeanAbsoluteDeviation",
        "RootMeanSquared",
        "Skewness",
        "TotalEnergy",
        "Uniformity",
        "Variance",
    ),
    "shape2D": (
        "Elongation",
        "MajorAxisLength",
        "MaximumDiameter",
        "MeshSurface",
        "MinorAxisLength",
        "Perimeter",
        "PerimeterSurfaceRatio",
        "PixelSurface",
        "Sphericity",
    ),
    "glcm": (
        "Autocorrelation",
        "ClusterProminence",
        "ClusterShade",
        "ClusterTendency",
        "Contrast",
        "Correlation",
        "DifferenceAverage",
        "DifferenceEntropy",
        "DifferenceVariance",
        "Id",
        "Idm",
        "Idmn",
        "Idn",
        "Imc1",
        "Imc2",
        "InverseVariance",
        "JointAverage",
        "JointEnergy",
        "JointEntropy",
        "MCC",
        "MaximumProbability",
        "SumAverage",
        "SumEntropy",
        "SumSquares",
    ),
    "glrlm": (
        "GrayLevelNonUniformity",
        "GrayLevelNonUniformityNormalized",
        "GrayLevelVariance",
        "HighGrayLevelRunEmphasis",
        "LongRunEmphasis",
        "LongRunHighGrayLevelEmphasis",
        "LongRunLowGrayLevelEmphasis",
        "LowGrayLevelRunEmphasis",
        "RunEntropy",
        "RunLengthNonUniformity",
        "RunLengthNonUniformityNormalized",
        "RunPercentage",
        "RunVariance",
        "ShortRunEmphasis",
        "ShortRunHighGrayLevelEmphasis",
        "ShortRunLowGrayLevelEmphasis",
    ),
    "glszm": (
        "GrayLevelNonUniformity",
        "GrayLevelNonUniformityNormalized",
        "GrayLevelVariance",
        "HighGrayLevelZoneEmphasis",
        "LargeAreaEmphasis",
        "LargeAreaHighGrayLevelEmphasis",
        "LargeAreaLowGrayLevelEmphasis",
        "LowGrayLevelZoneEmphasis",
        "SizeZoneNonUniformity",
        "SizeZoneNonUniformityNormalized",
        "SmallAreaEmphasis",
        "SmallAreaHighGrayLevelEmphasis",
        "SmallAreaLowGrayLevelEmphasis",
        "ZoneEntropy",
        "ZonePercentage",
        "ZoneVariance",
    ),
    "gldm": (
        "DependenceEntropy",
        "DependenceNonUniformity",
        "DependenceNonUniformityNormalized",
        "DependenceVariance",
        "GrayLevelNonUniformity",
        "GrayLevelVariance",
        "HighGrayLevelEmphasis",
        "LargeDependenceEmphasis",
        "LargeDependenceHighGrayLevelEmphasis",
        "LargeDependenceLowGrayLevelEmphasis",
        "LowGrayLevelEmphasis",
        "SmallDependenceEmphasis",
        "SmallDependenceHighGrayLevelEmphasis",
        "SmallDependenceLowGrayLevelEmphasis",
    ),
    "ngtdm": ("Busyness", "Coarseness", "Complexity", "Contrast", "Strength"),
}


def feature_names(classes: tuple[str, ...] | list[str] = FEATURE_CLASSES) -> list[str]:
    """Column names ``<class>_<Feature>`` for the given classes, in extraction order."""
    out: list[str] = []
    for c in classes:
        if c not in CLASS_FEATURES:
            raise ValueError(f"unknown radiomics feature class {c!r}; known: {', '.join(FEATURE_CLASSES)}")
        out.extend(f"{c}_{f}" for f in CLASS_FEATURES[c])
    return out
