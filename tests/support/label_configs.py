"""Label configs for fake LS projects, shared by the tests whose projects must look alike."""

# An auto-annotate project: a brush output for AMG's masks, smart keypoints as the interactive prompt.
BRUSH_WITH_SMART_KEYPOINTS = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="mask" toName="image"><Label value="Object"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object"/></KeyPointLabels></View>'
)
