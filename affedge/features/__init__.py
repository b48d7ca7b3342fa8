"""affedge.features"""
