"""Operations: metrics, memory figures, and the operator's command lines (plaza-gateway,
plaza-ctl)."""
