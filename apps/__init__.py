"""Streamlit dashboards: ``Home.py`` lists the runs under the runs root, ``pages/`` holds one page per recipe.

Launched by ``fusion app`` (``streamlit run apps/Home.py`` with ``FUSION_RUNS_DIR`` set). The pages only read run
folders and load saved models; they never train.
"""
