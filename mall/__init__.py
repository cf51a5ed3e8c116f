"""The mall of the go-zero tutorial, on dtmx: user-api, user rpc, user-score rpc."""
