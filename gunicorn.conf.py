"""gunicorn settings for the minigrad service (``gunicorn -c gunicorn.conf.py``; ``make serve`` uses it).

The settings and hooks are in ``service/gunicorn_config.py``, inside the package, so that an installed
minigrad has them too (``minigrad serve`` outside a checkout); this file is the project's handle on them.
Settings added here, below the import, override the package's.
"""

from service.gunicorn_config import *  # noqa: F403 -- gunicorn reads the settings from this module's names
