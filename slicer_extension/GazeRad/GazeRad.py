"""GazeRad: predicted radiologist attention, finding localisation, gaze import and
retraining for chest X-rays, served by the GazeRad MONAI Label app.

The Qt layer only: the HTTP client, NRRD reading and markups/table/colour conversions are in
``GazeRadLib``; every MRML node the module shows is built by ``GazeRadLib.scene.SceneLogic``
(no Qt), which the Logic here runs on ``slicer.mrmlScene`` with the application's logics and
CI runs on Slicer's own MRML core (``slicer-core``) against a real server. The Widget only
wires the panel (``Resources/UI/GazeRad.ui``) to the Logic.
"""

import logging
import os
import tempfile
import time

try:
    import ctk
    import qt
    import slicer
    import vtk
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError as _exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "GazeRad.py runs inside 3D Slicer: it needs Slicer's Python modules 'slicer', 'qt', 'ctk' and 'vtk' "
        f"({_exc}). Add slicer_extension/GazeRad to Slicer's module paths (Edit > Application Settings > Modules), "
        "or outside Slicer use the plain-Python library GazeRadLib (sys.path += ['slicer_extension/GazeRad']; "
        "import GazeRadLib)."
    ) from _exc

import numpy as np

import GazeRadLib
from GazeRadLib import GazeRadClient, GazeRadError, localization_status
from GazeRadLib.scene import COLOR_MAPS, IMAGE_ID_ATTR, SceneLogic, volume_ijk_to_ras

SETTINGS = "GazeRad"  # QSettings group: GazeRad/serverUrl, GazeRad/strategy, ...
DEFAULT_URL = "http://127.0.0.1:8000"


#
# GazeRad
#


class GazeRad(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "GazeRad"
        self.parent.categories = ["Radiology"]
        self.parent.dependencies = []
        self.parent.contributors = ["GazeRad project"]
        self.parent.helpText = """
Connects to a GazeRad server (a MONAI Label app) and shows, for a chest X-ray: where radiologists are
predicted to look (attention overlay), which findings the model suspects and where (boxes with scores),
a recorded reading's scanpath; it uploads gaze recordings and starts/stops model training.
See slicer_extension/README.md in the GazeRad repository.
"""
        self.parent.acknowledgementText = """
Built on 3D Slicer's scripted module template and MONAI Label.
"""


#
# GazeRadWidget
#


class GazeRadWidget(ScriptedLoadableModuleWidget):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None
        self.trainTimer = None
        self.seen = []  # studies shown in this session (excluded from "next study")

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GazeRad.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = GazeRadLogic()

        settings = qt.QSettings()
        self.ui.serverUrlEdit.text = settings.value(f"{SETTINGS}/serverUrl", DEFAULT_URL)
        self.ui.userEdit.text = settings.value(f"{SETTINGS}/user", "")
        self.ui.readerEdit.text = settings.value(f"{SETTINGS}/reader", "")
        self.ui.opacitySlider.value = float(settings.value(f"{SETTINGS}/opacity", 0.5))
        self.ui.minScoreSlider.value = float(settings.value(f"{SETTINGS}/minScore", 0.5))
        self.ui.topKSpinBox.value = int(settings.value(f"{SETTINGS}/topK", 0))
        self.ui.colorMapComboBox.addItems(COLOR_MAPS)
        self.ui.colorMapComboBox.currentText = settings.value(f"{SETTINGS}/colorMap", COLOR_MAPS[0])

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.loginButton.connect("clicked(bool)", self.onLogin)
        self.ui.nextStudyButton.connect("clicked(bool)", self.onNextStudy)
        self.ui.loadStudyButton.connect("clicked(bool)", self.onLoadStudy)
        self.ui.attentionButton.connect("clicked(bool)", self.onAttention)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.localizeButton.connect("clicked(bool)", self.onLocalize)
        self.ui.importGazeButton.connect("clicked(bool)", self.onImportGaze)
        self.ui.trainStartButton.connect("clicked(bool)", self.onTrainStart)
        self.ui.trainStopButton.connect("clicked(bool)", self.onTrainStop)

        self.trainTimer = qt.QTimer()
        self.trainTimer.setInterval(2000)
        self.trainTimer.connect("timeout()", self.onTrainPoll)
        self.setConnected(False)

    def cleanup(self):
        if self.trainTimer:
            self.trainTimer.stop()

    # ------------------------------------------------------------------ helpers
    def run(self, what, fn, *args, **kwargs):
        """Call ``fn``; every GazeRad error is shown to the user in words, never a traceback."""
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            return fn(*args, **kwargs)
        except GazeRadError as exc:
            self.ui.statusLabel.text = f"{what} failed"
            slicer.util.errorDisplay(f"{what} failed:\n\n{exc}", windowTitle="GazeRad")
        except Exception as exc:  # noqa: BLE001 - unexpected: still in words, with details in the log
            logging.exception(what)
            self.ui.statusLabel.text = f"{what} failed"
            slicer.util.errorDisplay(f"{what} failed unexpectedly: {exc}", windowTitle="GazeRad", detailedText=f"{type(exc).__name__}: {exc}")
        finally:
            slicer.app.restoreOverrideCursor()
        return None

    def setConnected(self, ok):
        for w in (
            self.ui.studyCollapsibleButton,
            self.ui.attentionCollapsibleButton,
            self.ui.localizeCollapsibleButton,
            self.ui.gazeCollapsibleButton,
            self.ui.trainCollapsibleButton,
        ):
            w.enabled = ok

    def saveSetting(self, key, value):
        qt.QSettings().setValue(f"{SETTINGS}/{key}", value)

    def currentImage(self):
        node = self.logic.currentImageNode()
        if node is None:
            raise GazeRadError("no GazeRad study is shown: load one with 'Next study' or 'Load' first")
        return node

    # ------------------------------------------------------------------ server
    def onConnect(self):
        url = self.ui.serverUrlEdit.text.strip()
        token = self.ui.tokenEdit.text.strip() or None
        info = self.run("Connecting to the GazeRad server", self.logic.connect, url, token)
        if info is None:
            self.setConnected(False)
            return
        self.saveSetting("serverUrl", url)
        self.fillFromInfo(info)
        self.setConnected(True)

    def onLogin(self):
        url = self.ui.serverUrlEdit.text.strip()
        user = self.ui.userEdit.text.strip()
        password = self.ui.passwordEdit.text
        self.ui.passwordEdit.text = ""
        res = self.run("Logging in", lambda: (self.logic.login(url, user, password),))
        if res is not None:
            token = res[0]
            self.saveSetting("user", user)
            self.ui.tokenEdit.text = token or ""
            self.ui.statusLabel.text = "Logged in" if token else "This server has no authentication: no log-in needed"

    def fillFromInfo(self, info):
        models = info.get("models", {})
        ready = [f"{m}: {d.get('weights', '?')}" for m, d in models.items()]
        self.ui.statusLabel.text = f"Connected to {self.logic.client.url} ({info.get('name', 'GazeRad')} {info.get('version', '')})"
        self.ui.modelsLabel.text = "\n".join(ready)
        self.ui.strategyComboBox.clear()
        self.ui.strategyComboBox.addItems(sorted(info.get("strategies", {})))
        strategy = qt.QSettings().value(f"{SETTINGS}/strategy", "")
        if strategy:
            self.ui.strategyComboBox.currentText = strategy
        self.ui.trainModelComboBox.clear()
        self.ui.trainModelComboBox.addItems(sorted(info.get("trainers", {})))
        labels = models.get("localization", {}).get("labels", [])
        self.ui.classesEdit.placeholderText = ", ".join(labels) if labels else "all findings"

    # ------------------------------------------------------------------ studies
    def onNextStudy(self):
        strategy = self.ui.strategyComboBox.currentText
        self.saveSetting("strategy", strategy)
        node = self.run("Fetching the next study", self.logic.nextStudy, strategy, self.seen)
        if node is False:
            slicer.util.infoDisplay("No study is left for this strategy.", windowTitle="GazeRad")
        elif node is not None:
            self.studyShown(node)

    def onLoadStudy(self):
        image_id = self.ui.imageIdEdit.text.strip()
        if not image_id:
            slicer.util.errorDisplay("Type a study id (the image file name without extension) first.", windowTitle="GazeRad")
            return
        node = self.run(f"Loading study {image_id}", self.logic.loadStudy, image_id)
        if node is not None:
            self.studyShown(node)

    def studyShown(self, node):
        image_id = node.GetAttribute(IMAGE_ID_ATTR)
        if image_id not in self.seen:
            self.seen.append(image_id)
        self.ui.imageIdEdit.text = image_id
        gaze = self.logic.lastStudyInfo.get("gaze")
        extra = f"; gaze: {', '.join(gaze['readers'])} ({gaze['fixations']} fixations)" if gaze else "; no gaze yet"
        self.ui.studyLabel.text = f"Study {image_id}{extra}"
        self.ui.scoreTable.setRowCount(0)

    # ------------------------------------------------------------------ attention
    def onAttention(self):
        self.saveSetting("colorMap", self.ui.colorMapComboBox.currentText)
        res = self.run(
            "Attention map", lambda: self.logic.showAttention(self.currentImage(), self.ui.opacitySlider.value, self.ui.colorMapComboBox.currentText)
        )
        if res is not None:
            _, info = res
            regions = sorted(info.get("regions", {}).items(), key=lambda kv: -kv[1])[:3]
            self.ui.attentionLabel.text = (
                "Most attention: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in regions) + f"; model {info.get('model_version', '?')}"
            )

    def onOpacity(self, value):
        self.saveSetting("opacity", value)
        self.logic.setSliceViewerLayers(foregroundOpacity=value)

    # ------------------------------------------------------------------ localisation
    def onLocalize(self):
        classes = [c.strip() for c in self.ui.classesEdit.text.split(",") if c.strip()] or None
        minScore, topK = self.ui.minScoreSlider.value, int(self.ui.topKSpinBox.value)
        self.saveSetting("minScore", minScore)
        self.saveSetting("topK", topK)
        res = self.run("Localisation", lambda: self.logic.showLocalization(self.currentImage(), classes, minScore, topK))
        if res is None:
            return
        rois, _, table, answer = res
        self.fillScoreTable(table)
        self.ui.statusLabel.text = localization_status(answer, minScore)

    def fillScoreTable(self, table):
        cols = table["columns"]
        w = self.ui.scoreTable
        w.clear()
        w.setColumnCount(len(cols))
        w.setHorizontalHeaderLabels([c[0] for c in cols])
        w.setRowCount(len(table["rows"]))
        for r, row in enumerate(table["rows"]):
            for c, v in enumerate(row):
                text = "" if isinstance(v, float) and v != v else (f"{v:.3f}" if isinstance(v, float) else str(v))
                w.setItem(r, c, qt.QTableWidgetItem(text))

    # ------------------------------------------------------------------ gaze
    def onImportGaze(self):
        node = self.run("Gaze import", self.currentImage)
        if node is None:
            return
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Gaze recording for this study", "", "Gaze recordings (*.csv *.json *.edf *.txt);;All files (*)"
        )
        if not path:
            return
        reader = self.ui.readerEdit.text.strip() or None
        self.saveSetting("reader", reader or "")
        res = self.run("Gaze import", self.logic.importGaze, node, path, reader, self.ui.replaceGazeCheckBox.checked)
        if res is not None:
            gaze, nodes = res
            n = sum(len(r["fixations"]) for r in gaze["records"])
            self.ui.gazeLabel.text = f"Stored on the server: {len(gaze['records'])} reading(s), {n} fixations; showing {len(nodes) // 2} scanpath(s)"

    # ------------------------------------------------------------------ training
    def onTrainStart(self):
        model = self.ui.trainModelComboBox.currentText
        params = {"epochs": int(self.ui.epochsSpinBox.value)}
        task = self.run(f"Starting {model} training", lambda: self.logic.requireClient().train_start(model, params))
        if task is not None:
            self.ui.trainStatusLabel.text = f"{model}: {task.get('status', 'SUBMITTED')}"
            self.ui.trainProgressBar.value = 0
            self.trainTimer.start()

    def onTrainStop(self):
        res = self.run("Stopping the training", lambda: self.logic.requireClient().train_stop())
        if res is not None:
            self.onTrainPoll()

    def onTrainPoll(self):
        try:
            prog = self.logic.trainingProgress()
        except GazeRadError as exc:  # keep polling: the server may be briefly busy
            self.ui.trainStatusLabel.text = f"cannot read training status: {exc}"
            return
        self.ui.trainStatusLabel.text = f"{prog.state}: {prog.message}"
        if prog.fraction is None:
            self.ui.trainProgressBar.maximum = 0 if prog.state == "RUNNING" else 100  # busy indicator
        else:
            self.ui.trainProgressBar.maximum = 100
            self.ui.trainProgressBar.value = int(round(100 * prog.fraction))
        if prog.finished:
            self.trainTimer.stop()
            self.ui.trainProgressBar.maximum = 100
            info = self.run("Refreshing model information", lambda: self.logic.requireClient().info())
            if info is not None:
                self.fillFromInfo(info)


#
# GazeRadLogic
#


class GazeRadLogic(ScriptedLoadableModuleLogic, SceneLogic):
    """:class:`GazeRadLib.scene.SceneLogic` on Slicer's scene with the application's own
    volumes and markups logics: the same code the tests run on slicer-core's MRML. Usable
    without the widget:

    logic = GazeRadLogic(); logic.connect("http://127.0.0.1:8000")
    image = logic.loadStudy("00000"); heat, info = logic.showAttention(image)
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        SceneLogic.__init__(
            self,
            slicer.mrmlScene,
            os.path.join(slicer.app.temporaryPath, "GazeRad"),
            volumesLogic=slicer.modules.volumes.logic(),
            markupsLogic=slicer.modules.markups.logic(),
        )

    def loadStudy(self, image_id):
        node = SceneLogic.loadStudy(self, image_id)
        slicer.util.resetSliceViews()  # fit the new study in every view
        return node


#
# GazeRadTest
#


class GazeRadTest(ScriptedLoadableModuleTest):
    """Self-test against a real GazeRad server.

    The server: ``GAZERAD_SERVER_URL`` (a running one), else ``GAZERAD_PYTHON`` (a Python
    with the gazerad package; the test runs ``gazerad serve`` with a small sample set on a
    free port and stops it at the end).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()
        self.serverProcess = None

    def tearDown(self):
        if self.serverProcess is not None:
            self.serverProcess.terminate()
            try:
                self.serverProcess.wait(30)
            except Exception:  # noqa: BLE001
                self.serverProcess.kill()

    def runTest(self):
        self.setUp()
        try:
            self.test_GazeRad_server_roundtrip()
        finally:
            self.tearDown()

    def serverUrl(self):
        url = os.environ.get("GAZERAD_SERVER_URL")
        if url:
            return url
        python = os.environ.get("GAZERAD_PYTHON")
        if not python:
            raise RuntimeError(
                "GazeRad self-test needs a server: set GAZERAD_SERVER_URL=http://HOST:PORT of a running "
                "GazeRad server, or GAZERAD_PYTHON=<python with gazerad installed> to let the test start one"
            )
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        work = tempfile.mkdtemp(prefix="gazerad-selftest-")
        self.delayDisplay(f"Starting a GazeRad server on port {port} (trains small sample models: a few minutes)")
        self.serverProcess = subprocess.Popen(
            [python, "-m", "gazerad", "serve", "--port", str(port), "--n", "24"],
            cwd=work,
            stdout=open(os.path.join(work, "server.log"), "w"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while time.time() - t0 < 1200:
            if self.serverProcess.poll() is not None:
                raise RuntimeError(f"the GazeRad server exited; see {work}/server.log")
            try:
                GazeRadClient(url, timeout=5).info()
                return url
            except GazeRadError:
                slicer.app.processEvents()
                time.sleep(2)
        raise RuntimeError(f"the GazeRad server did not start in 20 minutes; see {work}/server.log")

    def test_GazeRad_server_roundtrip(self):
        self.delayDisplay("Connecting")
        logic = GazeRadLogic()
        info = logic.connect(self.serverUrl())
        self.assertIn("attention", info["models"])
        self.assertIn("localization", info["models"])

        self.delayDisplay("Loading a study")
        studies = logic.client.studies()
        self.assertTrue(studies, "the server's datastore is empty")
        image_id = sorted(studies)[0]
        image = logic.loadStudy(image_id)
        self.assertIsNotNone(image.GetImageData())
        dims = image.GetImageData().GetDimensions()
        self.assertEqual(logic.currentImageNode(), image)

        self.delayDisplay("Attention overlay")
        heat, hinfo = logic.showAttention(image, opacity=0.4)
        arr = slicer.util.arrayFromVolume(heat)
        self.assertEqual(arr.shape, (1, dims[1], dims[0]))
        self.assertAlmostEqual(float(arr.sum()), 1.0, places=2)
        np.testing.assert_allclose(volume_ijk_to_ras(heat), volume_ijk_to_ras(image), atol=1e-9)
        comp = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(comp.GetForegroundVolumeID(), heat.GetID())
        self.assertEqual(comp.GetBackgroundVolumeID(), image.GetID())
        self.assertAlmostEqual(comp.GetForegroundOpacity(), 0.4)
        self.assertEqual(heat.GetDisplayNode().GetColorNode().GetName(), "GazeRad heat")
        self.assertTrue(heat.GetDisplayNode().GetApplyThreshold())

        self.delayDisplay("Localisation")
        rois, tableNode, table, res = logic.showLocalization(image, minScore=0.0)
        self.assertEqual(len(rois), len(res["boxes"]))
        ijk = np.asarray(volume_ijk_to_ras(image))
        for roi, box in zip(rois, res["boxes"]):
            self.assertTrue(roi.IsA("vtkMRMLMarkupsROINode"))
            self.assertTrue(roi.GetName().startswith(box["label"]))
            center = [0.0, 0.0, 0.0]
            roi.GetCenterWorld(center)
            want = ijk @ [box["x"] + box["w"] / 2 - 0.5, box["y"] + box["h"] / 2 - 0.5, 0, 1]
            np.testing.assert_allclose(center, want[:3], atol=1e-3)
        self.assertEqual(tableNode.GetNumberOfRows(), len(table["rows"]))
        self.assertEqual(tableNode.GetTable().GetColumnName(0), "Finding")

        self.delayDisplay("Gaze import")
        without = [i for i in sorted(studies) if "gaze" not in logic.client.image_info(i)]
        if without:  # never touch real readings: only a study without gaze, deleted again after
            image = logic.loadStudy(without[0])
            d = image.GetImageData().GetDimensions()
            path = os.path.join(logic.folder, "selftest_gaze.csv")
            with open(path, "w") as fh:
                fh.write("x,y,t_start,t_end\n")
                for k in range(5):
                    fh.write(f"{d[0] * (0.3 + 0.1 * k):.1f},{d[1] * 0.5:.1f},{0.4 * k:.2f},{0.4 * k + 0.3:.2f}\n")
            try:
                gaze, nodes = logic.importGaze(image, path, reader="slicer_selftest")
                self.assertEqual(gaze["records"][-1]["reader_id"], "slicer_selftest")
                self.assertEqual([n.GetAttribute("GazeRad.scanpath") for n in nodes], ["Curve", "Fiducial"])
                self.assertEqual(nodes[0].GetNumberOfControlPoints(), 5)
            finally:
                logic.client.delete_gaze(without[0])
        else:
            logging.info("GazeRad self-test: every study has gaze; gaze import not exercised")

        self.delayDisplay("Training status")
        prog = logic.trainingProgress()
        self.assertIn(prog.state, ("NONE", "SUBMITTED", "RUNNING", "DONE", "ERROR", "STOPPED"))

        self.delayDisplay("Server errors become messages")
        with self.assertRaises(GazeRadLib.NotFound):
            logic.client.attention("no-such-study")
        self.delayDisplay("GazeRad self-test passed")
