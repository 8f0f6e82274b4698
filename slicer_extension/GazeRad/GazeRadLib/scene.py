"""The GazeRad module's logic on an MRML scene: every node the module shows, built with Slicer's own logics.

:class:`SceneLogic` takes a ``vtkMRMLScene`` and the Slicer logics that read data into it
(volumes, markups; colours come from the scene's colour nodes). In 3D Slicer the module
passes ``slicer.mrmlScene`` and the application's logics; in tests (and in any Python with
the ``slicer-core`` wheel) a fresh scene with ``vtkSlicerVolumesLogic`` and
``vtkSlicerMarkupsLogic``. Nothing here imports Qt, so the module's Widget only wires the
panel to these methods and the tests run exactly what the module runs.

What it builds (per study, tagged with the ``GazeRad.imageId`` attribute):

- the X-ray: a scalar volume. DICOM, NRRD and NIfTI are read by Slicer's volume storage
  (ITK's geometry, LPS converted to RAS); PNG / JPEG by VTK's readers with the geometry ITK
  gives such a file (spacing 1 mm, origin 0, the same LPS-to-RAS flip), rows in file order.
  DICOM MONOCHROME1 is shown with the inverted grey colour table (as Slicer's DICOM plugin).
- the attention heatmap: the server's NRRD read by Slicer's volume storage node (the one
  Slicer loads scalar NRRD volumes with: ``vtkMRMLVolumeArchetypeStorageNode``, ITK's NRRD
  reader; ``vtkMRMLNRRDStorageNode`` is Slicer's reader of diffusion NRRDs and refuses a
  2-D scalar map), so its geometry is the file's, i.e. the image's; a colour table, window/level, lower
  threshold, and slice-view layering (image background, heatmap foreground at an opacity);
- localisation boxes: one ``vtkMRMLMarkupsROINode`` per box via the markups logic, and the
  score table as a ``vtkMRMLTableNode``;
- a gaze recording: scanpath as a curve and fixations as a point list (markups logic);
- training progress and the next study to read (server calls, no nodes);
- the scene saved to ``.mrml`` (with its data files) or ``.mrb``, and read back;
- a slice view as a PNG, drawn offscreen by Slicer's slice logic and markups displayable
  manager (:meth:`SceneLogic.renderSliceView`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .client import GazeRadClient, GazeRadError
from .conversions import colour_table, heatmap_volume, roi_markups, scanpath_markups, score_table, training_progress

__all__ = ["SceneLogic", "IMAGE_ID_ATTR", "COLOR_MAPS", "HEAT_COLOURS", "volume_ijk_to_ras"]

IMAGE_ID_ATTR = "GazeRad.imageId"
HEAT_COLOURS = "GazeRad heat"
COLOR_MAPS = [HEAT_COLOURS, "Inferno", "Viridis", "ColdToHotRainbow", "Rainbow"]
_VTK_IMAGE_READERS = {".png": "vtkPNGReader", ".jpg": "vtkJPEGReader", ".jpeg": "vtkJPEGReader"}
_LOAD_SINGLE_FILE = 4  # vtkSlicerVolumesLogic::AddArchetypeVolume loading option


def volume_ijk_to_ras(node: Any) -> List[List[float]]:
    """A volume node's IJK-to-RAS matrix as 4 x 4 nested lists."""
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return [[m.GetElement(r, c) for c in range(4)] for r in range(4)]


def _is_monochrome1(path: str) -> bool:
    if not path.lower().endswith(".dcm"):
        return False
    try:
        import pydicom  # bundled with 3D Slicer (its DICOM module uses it)
    except ImportError:
        return False
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    except Exception:  # noqa: BLE001 - unreadable header: the volume reader reports it
        return False


class SceneLogic:
    """GazeRad's nodes on ``scene`` (see the module docstring).

    Args:
        scene: the ``vtkMRMLScene`` to build in.
        folder: where downloaded images, heatmaps and markups files are kept.
        volumesLogic: a ``vtkSlicerVolumesLogic`` on ``scene`` (default: a new one).
        markupsLogic: a ``vtkSlicerMarkupsLogic`` on ``scene`` (default: a new one).
    """

    def __init__(self, scene: Any, folder: str, volumesLogic: Any = None, markupsLogic: Any = None) -> None:
        import slicer

        self.scene = scene
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        if scene.GetSingletonNode("Singleton", "vtkMRMLSelectionNode") is None:  # the markups logic needs one (the app has it)
            sel = slicer.vtkMRMLSelectionNode()
            sel.SetSingletonTag("Singleton")
            scene.AddNode(sel)
        # the application logic (in Slicer: the app's) links the module logics; here a small one
        self.app = slicer.vtkMRMLApplicationLogic()
        self.app.SetMRMLScene(scene)
        if volumesLogic is None:
            colors = slicer.vtkSlicerColorLogic()  # adds Slicer's default colour tables to the scene
            colors.SetMRMLApplicationLogic(self.app)
            colors.SetMRMLScene(scene)
            self.app.SetColorLogic(colors)
            self.app.SetModuleLogic("Colors", colors)
            volumesLogic = self._new_logic(slicer.vtkSlicerVolumesLogic)
            volumesLogic.SetMRMLApplicationLogic(self.app)
            self.app.SetModuleLogic("Volumes", volumesLogic)
        self.volumes = volumesLogic
        if markupsLogic is None:
            markupsLogic = self._new_logic(slicer.vtkSlicerMarkupsLogic)
            markupsLogic.SetMRMLApplicationLogic(self.app)
            self.app.SetModuleLogic("Markups", markupsLogic)  # the markups displayable managers find it here
        self.markups = markupsLogic
        self.client: Optional[GazeRadClient] = None
        self.lastStudyInfo: Dict[str, Any] = {}

    def _new_logic(self, cls: Any) -> Any:
        logic = cls()
        logic.SetMRMLScene(self.scene)
        return logic

    # ------------------------------------------------------------------ server
    def connect(self, url: str, token: Optional[str] = None) -> Dict[str, Any]:
        client = GazeRadClient(url, token=token)
        info = client.info()  # raises with a message when the server is not there
        self.client = client
        return info

    def login(self, url: str, user: str, password: str) -> Optional[str]:
        client = self.client if self.client is not None and self.client.url == url.rstrip("/") else GazeRadClient(url)
        token = client.login(user, password)
        self.client = client
        return token

    def requireClient(self) -> GazeRadClient:
        if self.client is None:
            raise GazeRadError("not connected: enter the server URL and press Connect")
        return self.client

    def trainingProgress(self):  # noqa: ANN201 - GazeRadLib.TrainingProgress
        return training_progress(self.requireClient().train_status())

    # ------------------------------------------------------------------ nodes
    def nodesOf(self, image_id: str, className: str = "vtkMRMLNode") -> List[Any]:
        """The scene's nodes of ``className`` that belong to study ``image_id``."""
        col = self.scene.GetNodesByClass(className)
        out = [col.GetItemAsObject(i) for i in range(col.GetNumberOfItems())]
        return [n for n in out if n.GetAttribute(IMAGE_ID_ATTR) == image_id]

    def _remove(self, nodes: Sequence[Any]) -> None:
        for n in nodes:
            self.scene.RemoveNode(n)

    def setSliceViewerLayers(self, background: Any = None, foreground: Any = None, foregroundOpacity: Optional[float] = None) -> None:
        """Every slice view of the scene: ``background`` / ``foreground`` volume (``None`` keeps it), opacity."""
        col = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for i in range(col.GetNumberOfItems()):
            comp = col.GetItemAsObject(i)
            if background is not None:
                comp.SetBackgroundVolumeID(background.GetID())
            if foreground is not None:
                comp.SetForegroundVolumeID(foreground.GetID())
            if foregroundOpacity is not None:
                comp.SetForegroundOpacity(float(foregroundOpacity))

    # ------------------------------------------------------------------ studies
    def readVolume(self, path: str, name: str) -> Any:
        """An X-ray file as a scalar volume node (see the module docstring for readers and geometry)."""
        import slicer

        ext = os.path.splitext(path)[1].lower()
        if ext in _VTK_IMAGE_READERS:
            import vtk
            from vtk.util import numpy_support

            reader = getattr(vtk, _VTK_IMAGE_READERS[ext])()
            reader.SetFileName(path)
            reader.Update()
            img = reader.GetOutput()
            w, h, _ = img.GetDimensions()
            if reader.GetErrorCode() or w * h == 0:
                raise GazeRadError(f"{path}: not a readable {ext[1:].upper()} image")
            px = numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)
            grey = px[..., 0] if px.shape[-1] < 3 else px[..., :3].mean(-1).astype(px.dtype)
            node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.diag([-1.0, -1.0, 1.0, 1.0])))  # ITK: 1 mm, origin 0, LPS
            slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(grey[::-1])[None])  # VTK's readers put the last row first
            node.CreateDefaultDisplayNodes()
        else:
            node = self.volumes.AddArchetypeVolume(path, name, _LOAD_SINGLE_FILE)
            if node is None:
                raise GazeRadError(f"{path}: Slicer cannot read this file as a volume")
            if node.GetDisplayNode() is None:
                node.CreateDefaultDisplayNodes()
            if _is_monochrome1(path):
                node.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeInvertedGrey")
        display = node.GetDisplayNode()
        display.AutoWindowLevelOn()
        return node

    def loadStudy(self, image_id: str) -> Any:
        client = self.requireClient()
        self.lastStudyInfo = client.image_info(image_id)
        path = client.download_image(image_id, os.path.join(self.folder, "images"))
        self._remove([n for n in self.nodesOf(image_id, "vtkMRMLScalarVolumeNode") if not n.GetAttribute("GazeRad.overlay")])
        node = self.readVolume(path, image_id)
        node.SetAttribute(IMAGE_ID_ATTR, image_id)
        self.setSliceViewerLayers(background=node)
        self._last = node
        return node

    def nextStudy(self, strategy: str, exclude: Sequence[str] = ()) -> Any:
        exclude = list(exclude)
        for _ in range(5):  # MONAI Label's "random" ignores "exclude": ask again for an unseen study
            nxt = self.requireClient().next_study(strategy, exclude)
            if not nxt:
                return False
            if nxt["id"] not in exclude:
                break
        return self.loadStudy(nxt["id"])

    def currentImageNode(self) -> Any:
        """The GazeRad study in the background of the red slice view (else the last loaded)."""
        col = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        comps = [col.GetItemAsObject(i) for i in range(col.GetNumberOfItems())]
        comps.sort(key=lambda c: c.GetLayoutName() != "Red")
        for comp in comps[:1]:
            node = self.scene.GetNodeByID(comp.GetBackgroundVolumeID()) if comp.GetBackgroundVolumeID() else None
            if node is not None and node.GetAttribute(IMAGE_ID_ATTR):
                return node
        last = getattr(self, "_last", None)
        return last if last is not None and self.scene.IsNodePresent(last) else None

    # ------------------------------------------------------------------ attention
    def colorNode(self, name: str = HEAT_COLOURS) -> Any:
        """A colour node of the scene by name, or GazeRad's own table (transparent at zero)."""
        if name != HEAT_COLOURS:
            node = self.scene.GetFirstNodeByName(name)
            if node is not None and node.IsA("vtkMRMLColorNode"):
                return node
        node = self.scene.GetFirstNodeByName(HEAT_COLOURS)
        if node is None:
            rows = colour_table(256)
            node = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEAT_COLOURS)
            node.SetTypeToUser()
            node.SetNumberOfColors(len(rows))
            if not hasattr(node, "SetColorName") and hasattr(node, "SetNamesInitialised"):  # Slicer < 5.4
                node.SetNamesInitialised(True)
            for i, (r, g, b, a) in enumerate(rows):
                node.SetColor(i, str(i), r, g, b, a)
        return node

    def showAttention(self, imageNode: Any, opacity: float = 0.5, colorMap: str = HEAT_COLOURS, boxes: Any = None) -> Tuple[Any, Dict[str, Any]]:
        """The predicted-attention overlay: the server's NRRD read by Slicer's volume storage (ITK's NRRD reader)."""
        image_id = imageNode.GetAttribute(IMAGE_ID_ATTR)
        nrrd, info = self.requireClient().attention(image_id, boxes=boxes)
        hv = heatmap_volume(nrrd)  # checks the file and gives the display range and threshold
        path = os.path.join(self.folder, f"{image_id}_attention.nrrd")
        with open(path, "wb") as fh:
            fh.write(nrrd)
        self._remove([n for n in self.nodesOf(image_id, "vtkMRMLScalarVolumeNode") if n.GetAttribute("GazeRad.overlay") == "attention"])
        heat = self.volumes.AddArchetypeVolume(path, f"{image_id} attention", _LOAD_SINGLE_FILE)
        if heat is None:
            raise GazeRadError(f"Slicer could not read the attention heatmap of {image_id!r} ({path})")
        heat.SetAttribute(IMAGE_ID_ATTR, image_id)
        heat.SetAttribute("GazeRad.overlay", "attention")
        heat.SetAttribute("GazeRad.info", json.dumps({k: info[k] for k in ("entropy", "max", "model_version") if k in info}))
        heat.CreateDefaultDisplayNodes()
        display = heat.GetDisplayNode()
        display.SetAndObserveColorNodeID(self.colorNode(colorMap).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(*hv.value_range)
        display.SetApplyThreshold(1)
        display.SetLowerThreshold(hv.threshold)
        display.SetUpperThreshold(hv.value_range[1] + 1.0)
        self.setSliceViewerLayers(background=imageNode, foreground=heat, foregroundOpacity=opacity)
        return heat, info

    # ------------------------------------------------------------------ localisation
    def _load_markups(self, doc: Dict[str, Any], path: str, name: str) -> Any:
        with open(path, "w") as fh:
            json.dump(doc, fh)
        node_id = self.markups.LoadMarkups(path, name)
        node = self.scene.GetNodeByID(node_id) if node_id else None
        if node is None:
            raise GazeRadError(f"Slicer's markups reader could not read {path}")
        return node

    def showLocalization(self, imageNode: Any, classes: Optional[Sequence[str]] = None, minScore: float = 0.5, topK: int = 0):  # noqa: ANN201
        """ROI nodes (one per box), the score table node, the table and the server's answer."""
        image_id = imageNode.GetAttribute(IMAGE_ID_ATTR)
        res = self.requireClient().localization(image_id, classes=classes, min_score=minScore, top_k=topK or None)
        ijk = volume_ijk_to_ras(imageNode)
        self._remove(self.nodesOf(image_id, "vtkMRMLMarkupsROINode"))
        rois = []
        for k, box in enumerate(res.get("boxes", [])):  # one file per box: one ROI node per box
            doc = roi_markups([box], ijk_to_ras=ijk)
            node = self._load_markups(doc, os.path.join(self.folder, f"{image_id}_roi{k}.mrk.json"), doc["markups"][0].get("name", box["label"]))
            node.SetAttribute(IMAGE_ID_ATTR, image_id)
            rois.append(node)
        table = score_table(res)
        tableNode = self.scoreTableNode(f"{image_id} scores", table)
        tableNode.SetAttribute(IMAGE_ID_ATTR, image_id)
        return rois, tableNode, table, res

    def scoreTableNode(self, name: str, table: Dict[str, Any]) -> Any:
        import vtk

        node = self.scene.GetFirstNodeByName(name)
        if node is None or not node.IsA("vtkMRMLTableNode"):
            node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        t = node.GetTable()
        t.Initialize()
        for col, kind in table["columns"]:
            arr = vtk.vtkStringArray() if kind == "string" else vtk.vtkDoubleArray()
            arr.SetName(col)
            t.AddColumn(arr)
        t.SetNumberOfRows(len(table["rows"]))
        for r, row in enumerate(table["rows"]):
            for c, v in enumerate(row):
                t.SetValue(r, c, vtk.vtkVariant(v))
        node.Modified()
        return node

    # ------------------------------------------------------------------ gaze
    def importGaze(self, imageNode: Any, path: str, reader: Optional[str] = None, replace: bool = False):  # noqa: ANN201
        image_id = imageNode.GetAttribute(IMAGE_ID_ATTR)
        client = self.requireClient()
        client.upload_gaze(image_id, path, reader=reader, replace=replace)
        gaze = client.gaze(image_id)  # the server's parse, whatever the file's format
        if gaze is None:
            raise GazeRadError(f"the server accepted the gaze for {image_id!r} but returns none on read-back")
        return gaze, self.showScanpath(imageNode, gaze)

    def showScanpath(self, imageNode: Any, gaze: Dict[str, Any], reader: Optional[str] = None) -> List[Any]:
        """Curve (scanpath) and point list (fixations) per reading, in the image's RAS."""
        image_id = imageNode.GetAttribute(IMAGE_ID_ATTR)
        for cls in ("vtkMRMLMarkupsCurveNode", "vtkMRMLMarkupsFiducialNode"):
            self._remove([n for n in self.nodesOf(image_id, cls) if n.GetAttribute("GazeRad.scanpath")])
        mk = scanpath_markups(gaze, ijk_to_ras=volume_ijk_to_ras(imageNode), reader=reader)
        nodes = []
        for k, m in enumerate(mk["markups"]):
            path = os.path.join(self.folder, f"{image_id}_gaze{k}.mrk.json")
            node = self._load_markups({"@schema": mk["@schema"], "markups": [m]}, path, m.get("name", f"gaze {k}"))
            node.SetAttribute(IMAGE_ID_ATTR, image_id)
            node.SetAttribute("GazeRad.scanpath", m["type"])
            nodes.append(node)
        return nodes

    # ------------------------------------------------------------------ pictures
    def renderSliceView(self, path: str, background: Any, foreground: Any = None, opacity: float = 0.5, size: Tuple[int, int] = (512, 512)) -> str:
        """A PNG of one slice view as Slicer draws it, offscreen: Slicer's slice logic reslices and
        blends ``background`` and ``foreground`` (its colour table, threshold, ``opacity``) and
        Slicer's markups displayable manager draws the scene's markups (ROIs, scanpaths) on it."""
        import slicer
        import vtk

        sl = getattr(self, "_snapshot", None)
        if sl is None:  # a slice view of its own: the application's views keep their settings
            sl = slicer.vtkMRMLSliceLogic()
            sl.SetMRMLApplicationLogic(self.app)
            sl.SetMRMLScene(self.scene)
            sl.AddSliceNode("GazeRadSnapshot")
            # a new slice node's slice-to-RAS is the identity (screen right = patient right);
            # Slicer's views are axial: patient right on the screen's left, as a film is read
            sl.GetSliceNode().SetOrientationToAxial()
            self._snapshot = sl
        view, comp = sl.GetSliceNode(), sl.GetSliceCompositeNode()
        comp.SetBackgroundVolumeID(background.GetID())
        comp.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        comp.SetForegroundOpacity(float(opacity))
        w, h = (int(v) for v in size)
        view.SetDimensions(w, h, 1)
        sl.FitSliceToBackground(w, h)
        window = vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        window.SetSize(w, h)
        renderer = vtk.vtkRenderer()
        window.AddRenderer(renderer)
        interactor = vtk.vtkRenderWindowInteractor()  # the displayable managers' widgets need one
        interactor.SetRenderWindow(window)
        image = vtk.vtkImageActor()
        image.GetMapper().SetInputConnection(sl.GetImageDataConnection())
        renderer.AddActor(image)
        cam = renderer.GetActiveCamera()  # world units = slice-view pixels, as in a slice view
        cam.ParallelProjectionOn()
        cam.SetFocalPoint((w - 1) / 2, (h - 1) / 2, 0.0)
        cam.SetPosition((w - 1) / 2, (h - 1) / 2, 100.0)
        cam.SetParallelScale(h / 2)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(self.app)
        if not factory.IsDisplayableManagerRegistered("vtkMRMLMarkupsDisplayableManager"):
            factory.RegisterDisplayableManager("vtkMRMLMarkupsDisplayableManager")
        managers = factory.InstantiateDisplayableManagers(renderer)
        managers.SetMRMLDisplayableNode(view)
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.Update()
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(path)
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        if not os.path.isfile(path):
            raise GazeRadError(f"could not write {path}")
        return path

    def sliceViewXY(self, ras: Sequence[float]) -> Tuple[float, float]:
        """Where a RAS point lands in the last :meth:`renderSliceView` picture: ``(column, row)``, row 0 at the top."""
        view = self._snapshot.GetSliceNode()
        m = np.array([[view.GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
        x, y, _, _ = np.linalg.solve(m, [ras[0], ras[1], ras[2], 1.0])
        return float(x), float(view.GetDimensions()[1] - 1 - y)

    # ------------------------------------------------------------------ scenes
    def saveScene(self, path: str) -> str:
        """The scene to ``path``: ``.mrb`` (one bundle) or ``.mrml`` (data files written beside it)."""

        path = os.path.abspath(path)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        app = self.app
        if path.lower().endswith(".mrb"):
            bundle = os.path.join(self.folder, "bundle", os.path.splitext(os.path.basename(path))[0])
            os.makedirs(bundle, exist_ok=True)
            if not app.SaveSceneToSlicerDataBundleDirectory(bundle, None):
                raise GazeRadError(f"Slicer could not save the scene to {bundle}")
            if not app.Zip(path, bundle):
                raise GazeRadError(f"Slicer could not write {path}")
            return path
        self.scene.SetRootDirectory(folder)
        self.scene.SetURL(path)
        col = self.scene.GetNodesByClass("vtkMRMLStorableNode")
        for i in range(col.GetNumberOfItems()):
            node = col.GetItemAsObject(i)
            if not node.GetSaveWithScene():
                continue
            storage = node.GetStorageNode()
            if storage is None:
                if not node.AddDefaultStorageNode():
                    continue
                storage = node.GetStorageNode()
            name = os.path.basename(storage.GetFileName() or "") or f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"
            storage.SetFileName(os.path.join(folder, name))
            if not storage.WriteData(node):
                raise GazeRadError(f"Slicer could not write {node.GetName()!r} to {storage.GetFileName()}")
        if not self.scene.Commit(path):
            raise GazeRadError(f"Slicer could not write {path}")
        return path

    def loadScene(self, path: str) -> None:
        """Replace the scene's content with a saved ``.mrml`` or ``.mrb``."""

        path = os.path.abspath(path)
        if path.lower().endswith(".mrb"):
            into = os.path.join(self.folder, "opened", os.path.splitext(os.path.basename(path))[0])
            os.makedirs(into, exist_ok=True)
            if not self.app.OpenSlicerDataBundle(path, into):
                raise GazeRadError(f"Slicer could not open {path}")
            return
        self.scene.SetURL(path)
        if not self.scene.Connect():
            raise GazeRadError(f"Slicer could not read {path}")
