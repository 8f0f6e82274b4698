"""The Slicer module's logic on Slicer's own MRML core (``slicer-core``), against a live GazeRad server.

A ``vtkMRMLScene`` with ``vtkSlicerVolumesLogic`` and ``vtkSlicerMarkupsLogic`` and two slice
views' composite nodes stands in for the application; :class:`GazeRadLib.scene.SceneLogic`
(what ``GazeRad.py``'s Logic is) builds every node on it. Checked against the server's own
answers and ITK's reading of the same files: image geometry, heatmap geometry and values, ROI
pixel boxes, the score table, scanpath control points, and a scene saved to ``.mrml`` and
``.mrb`` and read back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e .[slicer]; the test setup installs it)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' module here is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

from GazeRadLib import read_nrrd, score_table  # noqa: E402
from GazeRadLib.scene import IMAGE_ID_ATTR, SceneLogic, volume_ijk_to_ras  # noqa: E402
from tests.integration.test_slicer_lib import DX, server, studies  # noqa: E402,F401 - the module's live server and its studies
from tests.support.server import REPO  # noqa: E402

pytestmark = pytest.mark.slow
PNG = "00044"  # DX is its DICOM copy (MONOCHROME1, 0.5 mm)


def _scene() -> tuple:
    scene = slicer.vtkMRMLScene()
    for name in ("Red", "Yellow"):  # the application's slice views
        comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        comp.SetLayoutName(name)
    return scene


@pytest.fixture()
def logic(server, tmp_path: Path) -> SceneLogic:  # noqa: F811
    lg = SceneLogic(_scene(), str(tmp_path / "gazerad"))
    lg.connect(server.url)
    return lg


def _itk_ijk_to_ras(path: Path) -> np.ndarray:
    """ITK's index-to-physical of a 2-D file as a 4 x 4 IJK-to-RAS (LPS -> RAS)."""
    img = sitk.ReadImage(str(path))
    n = img.GetDimension()
    d = np.array(img.GetDirection()).reshape(n, n)[:2, :2]
    m = np.eye(4)
    m[:2, :2] = d @ np.diag(img.GetSpacing()[:2])
    m[:2, 3] = img.GetOrigin()[:2]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ m


def _ras_to_ijk(node, ras: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(np.asarray(volume_ijk_to_ras(node)))
    return (inv @ np.c_[ras, np.ones(len(ras))].T).T[:, :3]


@pytest.mark.parametrize("image", [PNG, DX])
def test_image_volume_matches_itk(logic: SceneLogic, studies: Path, image: str) -> None:  # noqa: F811
    node = logic.loadStudy(image)
    path = next((studies / "images").glob(f"{image}.*"))
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetAttribute(IMAGE_ID_ATTR) == image
    np.testing.assert_allclose(volume_ijk_to_ras(node), _itk_ijk_to_ras(path), atol=1e-9)
    arr = slicer.util.arrayFromVolume(node)
    np.testing.assert_array_equal(arr[0], sitk.GetArrayFromImage(sitk.ReadImage(str(path))).reshape(arr.shape[1:]))
    colour = node.GetDisplayNode().GetColorNodeID()
    assert colour == ("vtkMRMLColorTableNodeInvertedGrey" if image == DX else "vtkMRMLColorTableNodeGrey")
    assert logic.currentImageNode() is node or logic.currentImageNode().GetID() == node.GetID()


@pytest.mark.parametrize("image", [PNG, DX])
def test_heatmap_volume_has_the_image_geometry_and_the_server_values(logic: SceneLogic, image: str) -> None:
    img = logic.loadStudy(image)
    heat, info = logic.showAttention(img, opacity=0.4)
    np.testing.assert_allclose(volume_ijk_to_ras(heat), volume_ijk_to_ras(img), atol=1e-9)
    nrrd, _ = logic.client.attention(image)
    ref, _, _ = read_nrrd(nrrd)
    got = slicer.util.arrayFromVolume(heat)
    assert got.shape == (1, *ref.shape[-2:]) and heat.GetStorageNode().GetFileName().endswith(".nrrd")
    np.testing.assert_allclose(got[0], ref.reshape(got.shape[1:]), atol=1e-7)
    d = heat.GetDisplayNode()
    assert d.GetColorNode().GetName() == "GazeRad heat" and d.GetApplyThreshold() and d.GetLowerThreshold() > 0
    col = logic.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for k in range(col.GetNumberOfItems()):
        comp = col.GetItemAsObject(k)
        assert comp.GetBackgroundVolumeID() == img.GetID() and comp.GetForegroundVolumeID() == heat.GetID()
        assert comp.GetForegroundOpacity() == pytest.approx(0.4)


@pytest.mark.parametrize("image", [PNG, DX])
def test_roi_bounds_table_and_scanpath_match_the_server(logic: SceneLogic, image: str, tmp_path: Path) -> None:
    img = logic.loadStudy(image)
    rois, table_node, table, res = logic.showLocalization(img, minScore=0.0, topK=1)
    assert rois and len(rois) == len(res["boxes"])
    for roi, box in zip(rois, res["boxes"]):
        assert roi.IsA("vtkMRMLMarkupsROINode") and roi.GetName().startswith(box["label"])
        b = [0.0] * 6
        roi.GetRASBounds(b)
        corners = _ras_to_ijk(img, np.array([[b[0], b[2], 0.0], [b[1], b[3], 0.0]]))
        lo, hi = corners.min(0), corners.max(0)
        # pixel edges x .. x + w are IJK x - 0.5 .. x + w - 0.5 (IJK at pixel centres)
        np.testing.assert_allclose(
            [lo[0], hi[0], lo[1], hi[1]], [box["x"] - 0.5, box["x"] + box["w"] - 0.5, box["y"] - 0.5, box["y"] + box["h"] - 0.5], atol=1e-6
        )
    t = table_node.GetTable()
    assert [t.GetColumnName(c) for c in range(t.GetNumberOfColumns())] == [c for c, _ in table["columns"]]
    assert t.GetNumberOfRows() == len(score_table(res)["rows"])
    for r, row in enumerate(score_table(res)["rows"]):
        assert t.GetValue(r, 0).ToString() == row[0]
        got, want = t.GetValue(r, 2).ToDouble(), row[2]
        assert got == pytest.approx(want, abs=1e-12)
    # an uploaded reading's scanpath: control points at the uploaded fixations, in IJK
    gaze, nodes = logic.importGaze(img, _gaze_csv(tmp_path / "g.csv"), reader="dr_scene", replace=True)
    fix = np.loadtxt(tmp_path / "g.csv", delimiter=",", skiprows=1)[:, :2]
    assert [n.GetAttribute("GazeRad.scanpath") for n in nodes] == ["Curve", "Fiducial"] and gaze["records"][-1]["reader_id"] == "dr_scene"
    curve = nodes[0]
    assert curve.IsA("vtkMRMLMarkupsCurveNode") and curve.GetNumberOfControlPoints() == len(fix)
    ras = np.array([curve.GetNthControlPointPositionWorld(k) for k in range(len(fix))])
    np.testing.assert_allclose(_ras_to_ijk(img, ras)[:, :2], fix - 0.5, atol=1e-6)


@pytest.mark.parametrize("suffix", [".mrml", ".mrb"])
def test_saved_scene_reads_back_with_every_node(logic: SceneLogic, tmp_path: Path, suffix: str) -> None:
    img = logic.loadStudy(PNG)
    heat, _ = logic.showAttention(img)
    rois, table_node, _, _ = logic.showLocalization(img, minScore=0.0, topK=1)
    curve = logic.importGaze(img, _gaze_csv(tmp_path / "g.csv"), reader="dr_scene", replace=True)[1][0]
    before = {
        "image": slicer.util.arrayFromVolume(img).copy(),
        "heat": slicer.util.arrayFromVolume(heat).copy(),
        "ijk": volume_ijk_to_ras(img),
        "rois": {r.GetName(): _bounds(r) for r in rois},
        "rows": table_node.GetTable().GetNumberOfRows(),
        "curve": [curve.GetNthControlPointPositionWorld(k) for k in range(curve.GetNumberOfControlPoints())],
    }
    path = logic.saveScene(str(tmp_path / "saved" / f"scene{suffix}"))
    assert Path(path).is_file()
    other = SceneLogic(_scene(), str(tmp_path / "other"))
    other.loadScene(path)
    vols = {n.GetName(): n for n in _nodes(other.scene, "vtkMRMLScalarVolumeNode")}
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(vols[PNG]), before["image"])
    np.testing.assert_allclose(slicer.util.arrayFromVolume(vols[f"{PNG} attention"]), before["heat"], atol=1e-7)
    np.testing.assert_allclose(volume_ijk_to_ras(vols[PNG]), before["ijk"], atol=1e-9)
    assert vols[PNG].GetAttribute(IMAGE_ID_ATTR) == PNG
    rois2 = {r.GetName(): _bounds(r) for r in _nodes(other.scene, "vtkMRMLMarkupsROINode")}
    assert set(rois2) == set(before["rois"])
    for k, v in before["rois"].items():
        np.testing.assert_allclose(rois2[k], v, atol=1e-6)
    tables = _nodes(other.scene, "vtkMRMLTableNode")
    assert [t.GetTable().GetNumberOfRows() for t in tables if t.GetName() == f"{PNG} scores"] == [before["rows"]]
    curves = [c for c in _nodes(other.scene, "vtkMRMLMarkupsCurveNode") if c.GetName() == curve.GetName()]
    assert len(curves) == 1
    np.testing.assert_allclose([curves[0].GetNthControlPointPositionWorld(k) for k in range(len(before["curve"]))], before["curve"], atol=1e-6)


def _gaze_csv(path: Path) -> str:
    """Five fixations (x, y in pixels, seconds) across a 128 px image."""
    rows = [f"{20.5 + 19 * k:.1f},{40.25 + 11 * k:.2f},{0.4 * k:.2f},{0.4 * k + 0.3:.2f}" for k in range(5)]
    path.write_text("x,y,t_start,t_end\n" + "\n".join(rows) + "\n")
    return str(path)


def _nodes(scene, cls: str) -> list:
    col = scene.GetNodesByClass(cls)
    return [col.GetItemAsObject(i) for i in range(col.GetNumberOfItems())]


def _bounds(roi) -> list[float]:
    b = [0.0] * 6
    roi.GetRASBounds(b)
    return b


def test_no_finding_above_min_score_gives_no_roi(logic: SceneLogic) -> None:
    img = logic.loadStudy(PNG)
    rois, _, table, res = logic.showLocalization(img, minScore=1.0)
    assert rois == [] and not res["finding"] and "no finding" in res["message"]
    assert [r[1] for r in table["rows"]] == ["class"] * len(res["prediction"])


def test_module_logic_is_the_scene_logic_and_the_widget_only_wires() -> None:
    """GazeRad.py's Logic is SceneLogic on Slicer's scene and logics; the Widget builds no nodes."""
    tree = ast.parse((REPO / "slicer_extension" / "GazeRad" / "GazeRad.py").read_text())
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    assert "SceneLogic" in {ast.unparse(b) for b in classes["GazeRadLogic"].bases}
    widget = ast.unparse(classes["GazeRadWidget"])
    for call in ("AddNewNodeByClass", "LoadMarkups", "loadVolume", "loadMarkups", "addVolumeFromArray", "mrmlScene.RemoveNode"):
        assert call not in widget, call
    logic_src = ast.unparse(classes["GazeRadLogic"])
    assert "slicer.mrmlScene" in logic_src and "slicer.modules.volumes.logic()" in logic_src and "slicer.modules.markups.logic()" in logic_src
    assert "slicer-core" in (REPO / "pyproject.toml").read_text()  # the optional extra the test setup installs


def test_slice_view_is_drawn_by_slicer_with_heatmap_and_rois(logic: SceneLogic, tmp_path: Path) -> None:
    """Offscreen slice view: the ROI outline is drawn where the box is; the heatmap changes the picture."""
    from PIL import Image

    img = logic.loadStudy(PNG)
    heat, _ = logic.showAttention(img)
    rois, _, _, res = logic.showLocalization(img, minScore=0.0, topK=1)
    for r in rois[1:]:
        r.GetDisplayNode().SetVisibility(0)
    rois[0].GetDisplayNode().SetPropertiesLabelVisibility(0)  # outline only: the label text lies outside the box
    size = (256, 256)
    plain = np.asarray(Image.open(logic.renderSliceView(str(tmp_path / "plain.png"), img, size=size)).convert("RGB")).astype(int)
    rois[0].GetDisplayNode().SetVisibility(0)
    bare = np.asarray(Image.open(logic.renderSliceView(str(tmp_path / "bare.png"), img, size=size)).convert("RGB")).astype(int)
    over = np.asarray(Image.open(logic.renderSliceView(str(tmp_path / "heat.png"), img, heat, opacity=0.6, size=size)).convert("RGB")).astype(int)
    assert plain.shape == (256, 256, 3) and bare.std() > 5  # the X-ray is drawn
    b = [0.0] * 6
    rois[0].GetRASBounds(b)
    cols, rows = zip(*(logic.sliceViewXY((x, y, 0.0)) for x in b[:2] for y in b[2:4]))
    diff = np.abs(plain - bare).sum(-1) > 30
    ys, xs = np.nonzero(diff)
    assert len(xs) > 20, "the ROI was not drawn"
    # every changed pixel lies on or inside the ROI's projected box (2 px for line width)
    assert xs.min() >= min(cols) - 2 and xs.max() <= max(cols) + 2 and ys.min() >= min(rows) - 2 and ys.max() <= max(rows) + 2
    assert (np.abs(over - bare).sum(-1) > 30).mean() > 0.01  # the heatmap overlay shows
    # shown as a film is read: the image's left column on the screen's left, its top row on top
    box, (w, h) = res["boxes"][0], res["size"]
    assert abs(xs.mean() / size[0] - (box["x"] + box["w"] / 2) / w) < 0.1 and abs(ys.mean() / size[1] - (box["y"] + box["h"] / 2) / h) < 0.1
