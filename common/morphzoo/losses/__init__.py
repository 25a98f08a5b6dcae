"""Registration losses built from monai.losses."""
from morphzoo.losses.registration import RegistrationLoss, make_image_loss, make_regularizer, split_targets
