"""tidings-replay: a range of inbound records through the worker's own handlers, in memory.

``records`` (what a replay reads: a topic range or an exported file), ``kafka`` (the reader that
never joins the deployment's group), ``run`` (the handlers the worker runs, over in-memory tables
and a recording writer), ``report`` (one line per mail and why, the summary, the gallery),
``shadow`` (what the deployment sent, compared), ``cli`` (the command).
"""
