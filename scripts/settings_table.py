"""Print the README's configuration table from the Settings model (docs stay in step)."""

from ringfence.service.settings import ENV_PREFIX, Settings

print("| env var | default | meaning |")
print("|---|---|---|")
for name, field in Settings.model_fields.items():
    default = "unset" if field.default is None else f"`{field.default}`"
    print(f"| `{ENV_PREFIX}{name.upper()}` | {default} | {field.description} |")
