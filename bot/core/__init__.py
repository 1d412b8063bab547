"""The leaf every room shares: plain data and the few rules that belong to no room.

Owns the data passed between steps and stored (model, batch, messages, findings), the
configuration with every section parsed here (config), text made inert (inert), what hides in
untrusted names (names) and the process counters (counters).

Imports nothing of the project outside bot.core, so store/ and every package may import it
(the rules: pyproject.toml, [tool.importlinter])."""
