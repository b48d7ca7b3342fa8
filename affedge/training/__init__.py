"""affedge.training"""
