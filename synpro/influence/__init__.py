"""The influence probe (θ → θ′) and influence scoring I(y) = L(y; θ) − L(y; θ′), in process or over HTTP."""
