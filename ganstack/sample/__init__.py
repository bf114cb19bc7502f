"""Drawing from a trained stack: `ganstack.load` and sample folders (draw), images and contact sheets, manifests, data previews."""
