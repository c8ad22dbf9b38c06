import json
import sys

with open("package.json") as handle:
    version = json.load(handle)["version"]
print(f"version {version}")
sys.exit(0 if version.count(".") == 2 else 1)
