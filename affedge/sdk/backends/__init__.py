"""affedge.sdk.backends"""
