"""ml_collections config files of the apps (``--config=configs/<file>.py[:ARG]``). They import each other as the
``configs`` package: the launchers put the checkout root on ``sys.path``."""
