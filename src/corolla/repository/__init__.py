"""Version management with TF Serving's vocabulary: source, policy, manager, serving map."""
