"""Helpers shared by the tests: synthetic study sets (``studies``), radiomics parity cases, real servers (``server``)."""
