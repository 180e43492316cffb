"""mitmproxy addon script: the inspector sidecar inside plain mitmdump.

    mitmdump -s addons/inspector_addon.py --mode reverse:http://127.0.0.1:8000@8080 \\
        --set inspector_rules=signatures/ --set inspector_eve=eve.json

Options: `mitmdump -s addons/inspector_addon.py --options | grep inspector_`, or docs/live.md.
`inspector proxy` runs the same addon with the options set for you.
"""

from inspector.live.addon import InspectorAddon

addons = [InspectorAddon()]
