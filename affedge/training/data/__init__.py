"""affedge.training.data"""
