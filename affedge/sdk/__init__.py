"""affedge.sdk"""
