"""affedge.export"""
