"""nbdkit as a frontend: the plugin nbdkit loads, its thread states, and the launcher that runs nbdkit.

- :mod:`~blockemu.frontends.nbdkit.plugin`: the python-plugin callbacks (``plugins/blockemu.py`` re-exports them);
- :mod:`~blockemu.frontends.nbdkit.threads`: keeping nbdkit's worker threads' Python thread states;
- :mod:`~blockemu.frontends.nbdkit.launcher`: starting nbdkit with the plugin and watching over it.

Empty on purpose: the launcher runs in ``blockemu serve``, which must not
import the plugin's device models just to start nbdkit.
"""
