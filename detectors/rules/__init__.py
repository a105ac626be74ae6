"""Rule detectors: what operators configure per family, quantity, unit or device."""
